"""
The provider's Airflow plugins: the on-call dashboard (:mod:`.dashboard`, entry point
``airflow.plugins``), its data (:mod:`.dashboard_data`, :mod:`.charts`) and its Jinja2 templates
(``templates/``, package data).

Every Airflow process imports plugins, so this package imports nothing itself.
"""
