"""Marketing team: nightly enrichment of product descriptions, a bulk job built by an upstream task.

The upstream task returns records ``{"key": sku, "params": {...}}``; the operator validates them
against the ``enrichment`` job type, mints the ``custom_id``s and waits deferred. The last task
reads the stored results back, joined to each product's SKU, and marks them consumed in the ledger
(results nobody consumed raise an alert before they expire at the API).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import ObjectStoragePath, dag, task

from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
from airflow_claude_batches.store.ledger import Ledger
from airflow_claude_batches.store.results import read_results

PRODUCTS = {
    "SKU-1001": "Stainless steel water bottle, 750 ml, keeps drinks cold for 24 hours",
    "SKU-1002": "Merino wool hiking socks, cushioned sole, sizes 36-47",
    "SKU-1003": "Collapsible silicone camping bowl with lid",
    "SKU-1004": "Headlamp, 400 lumens, USB-C rechargeable, red night mode",
    "SKU-1005": "Ultralight two-person tent, 1.4 kg, three-season",
    "SKU-1006": "Insulated down jacket, packable into its own pocket",
}


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["claude-batches", "team:marketing"],
)
def marketing_nightly_enrichment():
    @task
    def build_requests() -> list[dict]:
        return [
            {
                "key": sku,
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 200,
                    "system": "You write short, friendly product descriptions for an outdoor shop.",
                    "messages": [{"role": "user", "content": f"Describe: {facts}"}],
                },
            }
            for sku, facts in PRODUCTS.items()
        ]

    enrich = ClaudeBatchSubmitOperator(
        task_id="enrich_descriptions",
        team="marketing",
        job_type="enrichment",
        job_id="enrichment-{{ dag_run.run_after | ts_nodash | lower }}",
        requests=build_requests(),
        poll_interval=5,
    )

    @task
    def publish(summary: dict) -> int:
        """Read the descriptions back by SKU, then record in the ledger that they were consumed."""
        path = ObjectStoragePath(summary["results_uri"], conn_id=summary["results_conn_id"])
        published = 0
        for record in read_results(path, types=["succeeded"]):
            text = record.result["message"]["content"][0]["text"]
            print(f"{record.key}: {text[:80]}")
            published += 1
        ledger = Ledger()
        for batch_id in summary["batch_ids"]:
            ledger.update(batch_id, consumed_at=pendulum.now("UTC"))
        return published

    publish(enrich.output)


marketing_nightly_enrichment()
