#!/usr/bin/env bash
# Prepare the databases before the Airflow services start: migrate Airflow's metadata database and
# the ledger's own database, then create or update one pool per team of the governance file
# (include_deferred: a deferred batch keeps its team's slot). Pools cannot be created from task or
# DAG code in Airflow 3, hence this step.
# Run by docker-compose.yaml's airflow-init service and by the integration test harness, so the
# deployed path and the tested path are the same. Connections need no step: they are AIRFLOW_CONN_*.
set -euo pipefail
airflow db migrate
airflow claude-batches db migrate
airflow claude-batches sync-pools
