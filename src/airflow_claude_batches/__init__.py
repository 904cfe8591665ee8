"""Governed, organization-wide Airflow provider for Anthropic's Message Batches API."""

from __future__ import annotations

from typing import Any

__version__ = "0.3.0"

_MODULE = "airflow_claude_batches"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

    It reuses the official provider's ``anthropic`` connection type rather than declaring a second
    connection form: teams already have an ``anthropic_default`` connection.
    """
    return {
        "package-name": "airflow-claude-batches",
        "name": "Claude Batches",
        "description": "Governed submission, tracking, persistence and retention of Anthropic "
        "Message Batches: policy, namespaced ids, spend, quotas, ledger, alerts.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Claude Batches",
                "external-doc-url": "https://docs.claude.com/en/docs/build-with-claude/batch-processing",
                "tags": ["ai"],
            }
        ],
        "hooks": [{"integration-name": "Claude Batches", "python-modules": [f"{_MODULE}.hooks.batches"]}],
        "operators": [
            {"integration-name": "Claude Batches", "python-modules": [f"{_MODULE}.operators.submit"]}
        ],
        "sensors": [{"integration-name": "Claude Batches", "python-modules": [f"{_MODULE}.sensors.batch"]}],
        "triggers": [
            {
                "integration-name": "Claude Batches",
                "python-modules": [f"{_MODULE}.triggers.batch", f"{_MODULE}.triggers.capacity"],
            }
        ],
        "cli": [f"{_MODULE}.cli.get_cli_commands"],
        # Listed for `airflow providers plugins`; Airflow loads it through the `airflow.plugins` entry
        # point, since provider plugins load only with [core] lazy_discover_providers = False.
        "plugins": [
            {"name": "claude_batches", "plugin-class": f"{_MODULE}.plugins.dashboard.ClaudeBatchesPlugin"}
        ],
        "config": {
            "claude_batches": {
                "description": "Settings of the airflow-claude-batches provider.",
                "options": {
                    "policy_file": {
                        "description": "Path of the governance YAML file (teams, job types, prices).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/claude_batches_policy.yaml",
                        "default": "",
                    },
                    "cluster_policy": {
                        "description": "Apply the provider's cluster policy (entry point airflow.policy) "
                        "when policy_file is set: refuse ungoverned batch tasks and DAG files that call "
                        "the Message Batches API directly. Set False to opt out.",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                    "dashboard_all_teams_roles": {
                        "description": "Comma-separated roles of the auth manager whose users see every "
                        "team on the dashboard; other users see only the teams whose DAGs they may read.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "Admin,Op",
                        "default": "Admin",
                    },
                    "dashboard_charts_seconds": {
                        "description": "How long the dashboard reuses its charts' 30 days of data per set of "
                        "teams (the charts show when they were read). 0: read on every view.",
                        "version_added": "0.3.0",
                        "type": "float",
                        "example": "60",
                        "default": "300",
                    },
                    "results_root": {
                        "description": "Root of the results store: a file:// or s3:// URI. Empty means "
                        "file://$AIRFLOW_HOME/claude_batches. The embedded SQLite ledger (no ledger_conn_id) "
                        "lives in it when it is local.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://my-bucket/claude-batches",
                        "default": "",
                    },
                    "archive_root": {
                        "description": "Where the retention DAG archives results: a file:// or s3:// URI. "
                        "Empty means {results_root}/_archive.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://my-archive-bucket/claude-batches",
                        "default": "",
                    },
                    "archive_conn_id": {
                        "description": "Connection for archive_root; empty means results_conn_id.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "aws_default",
                        "default": "",
                    },
                    "trigger_min_seconds": {
                        "description": "A batch trigger holds its event until it has run this long: "
                        "Airflow 3.3 can fail a task resumed within seconds of its deferral "
                        "(apache/airflow#67287).",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "10",
                        "default": "10",
                    },
                    "ledger_conn_id": {
                        "description": "Airflow connection of the ledger database: a 'postgres' "
                        "connection (or 'sqlite' with the file path as host). Empty means the embedded "
                        "SQLite file ledger.db in the local results root (one machine only). Run "
                        "`airflow claude-batches db migrate` after installing or upgrading.",
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "claude_batches_ledger",
                        "default": "",
                    },
                    "create_reconcile_seconds": {
                        "description": "After a create without an answer, how long to look for the batch "
                        "in the API's list (which may lag behind a create) before sending it again.",
                        "version_added": "0.2.0",
                        "type": "float",
                        "example": "60",
                        "default": "30",
                    },
                    "results_conn_id": {
                        "description": "Airflow connection used for the results root "
                        "(for s3:// an aws connection). Empty for file://.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "aws_default",
                        "default": "",
                    },
                },
            }
        },
    }
