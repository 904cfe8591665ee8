"""The provider's hook over the ``anthropic`` SDK (:mod:`airflow_claude_batches.hooks.batches`)."""

#: ``AnthropicHook.default_conn_name``, named here so that operators and triggers can default to it
#: without importing the SDK (~2.5 s of CPU) when a DAG file is parsed or a trigger module is loaded.
DEFAULT_CONN_ID = "anthropic_default"
