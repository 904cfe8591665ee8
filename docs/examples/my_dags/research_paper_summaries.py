import pendulum
from airflow.sdk import ObjectStoragePath, dag, task

from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator
from airflow_claude_batches.store.results import read_results

ABSTRACTS = {
    "arxiv-2401-00001": "We study batch inference for large language models under cost budgets ...",
    "arxiv-2401-00002": "A survey of workflow orchestration for machine learning pipelines ...",
}


@dag(schedule="@daily", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def research_paper_summaries():
    @task
    def build_requests() -> list[dict]:
        """One request per paper, keyed by its id: the key comes back with each result."""
        return [
            {
                "key": paper_id,
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 200,
                    "system": "Summarize the abstract in one sentence.",
                    "messages": [{"role": "user", "content": abstract}],
                },
            }
            for paper_id, abstract in ABSTRACTS.items()
        ]

    summarize = ClaudeBatchSubmitOperator(
        task_id="summarize",
        job_type="summaries",
        job_id="summaries-{{ dag_run.run_after | ts_nodash | lower }}",  # the same across retries
        requests=build_requests(),
        poll_interval=5,
    )

    @task
    def print_summaries(summary: dict) -> int:
        """Read the stored results back, joined to the keys (summary: the operator's return value)."""
        path = ObjectStoragePath(summary["results_uri"], conn_id=summary["results_conn_id"])
        count = 0
        for record in read_results(path, types=["succeeded"]):
            print(record.key, record.result["message"]["content"][0]["text"])
            count += 1
        return count

    print_summaries(summarize.output)


research_paper_summaries()
