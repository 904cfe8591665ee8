"""Session fixtures for the multi-process integration suite (marker ``integration``).

One PostgreSQL server, migrated once into a template database; each store kind (``file``, ``s3``)
gets a clone of it and its own set of Airflow processes, started on first use and kept for the
session. The ``s3`` cluster replaces the ``file`` one; it starts in the background as soon as the
``file`` cluster is up (when a collected test needs it), so its ~30 s start overlaps the ``file``
tests, and at most two clusters run at a time. A failing test
gets the tail of every process log in its report; the wall time and peak memory of the suite are
written to ``<temp dir>/integration-report.json`` and printed in the terminal summary.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.integration.airflow_cluster import (
    AIRFLOW_PROCESSES,
    DAGS_FOLDER,
    POLICY_FILE,
    AirflowClient,
    AirflowCluster,
    HarnessError,
    PostgresServer,
    deployment_env,
    free_port,
    process_env,
    read_env_file,
    run_init,
)
from tests.integration.example_runs import Observed, run_examples
from tests.s3_server import S3Server, connection_env

from airflow_claude_batches.emulator import EmulatorHandle, run_emulator
from airflow_claude_batches.store.database import LedgerDatabase
from airflow_claude_batches.store.ledger import Ledger

TEMPLATE_DB = "airflow_template"
BATCH_SECONDS = 2.0
# A pool of one slot that counts deferred tasks: the harness self-test fills it with a deferred sensor.
SELFTEST_POOL = "harness_deferred"
SELFTEST_DAG_ID = "harness_deferred_pool"
SELFTEST_DEFER_SECONDS = 15
SELFTEST_DAG = f'''
from datetime import timedelta

from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import dag


@dag(dag_id="{SELFTEST_DAG_ID}", schedule=None, max_active_runs=2, tags=["integration-harness"])
def harness_deferred_pool():
    TimeDeltaSensor(
        task_id="wait",
        delta=timedelta(seconds={SELFTEST_DEFER_SECONDS}),
        deferrable=True,
        pool="{SELFTEST_POOL}",
    )


harness_deferred_pool()
'''

#: A support-team DAG (``support_*.py`` binds it to support) whose submit task may be retried once:
#: the crash test kills its worker right after the API made its batch.
CRASH_DAG_ID = "support_crash_after_create"
CRASH_REQUESTS = 3
CRASH_DAG = f'''
from datetime import timedelta

from airflow.sdk import dag

from airflow_claude_batches.operators.submit import ClaudeBatchSubmitOperator


@dag(dag_id="{CRASH_DAG_ID}", schedule=None, tags=["integration-harness"])
def support_crash_after_create():
    ClaudeBatchSubmitOperator(
        task_id="classify",
        job_type="classification",
        job_id="crash-{{{{ run_id | replace(':', '-') | replace('+', '-') | lower }}}}",
        requests=[
            {{"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{{"role": "user", "content": c}}]}}
            for c in "abcdefghij"[:{CRASH_REQUESTS}]
        ],
        poll_interval=1,
        retries=1,
        retry_delay=timedelta(seconds=2),
    )


support_crash_after_create()
'''

_STARTED = time.monotonic()
_REPORT: dict[str, Any] = {"clusters": {}}
_ACTIVE: dict[str, AirflowCluster] = {}


@dataclass
class RunningCluster:
    """A started cluster with what tests need to drive and inspect it."""

    kind: str
    cluster: AirflowCluster
    client: AirflowClient
    results_root: str
    ledger_url: str
    s3: S3Server | None = None

    def ledger(self) -> Ledger:
        """The cluster's ledger, in its own PostgreSQL database."""
        return Ledger(LedgerDatabase(self.ledger_url))

    def trigger_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        """What the triggerer process logged for the task's triggers (Airflow 3.3 writes it beside the
        task log as ``attempt=N.log.trigger.ID.log``; the triggerer's own output names no trigger)."""
        folder = self.cluster.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(folder.glob("*.log.trigger.*.log"))
        )


STORE_KINDS = ("file", "s3")


class ClusterManager:
    """Starts the cluster for a store kind on demand, stopping the previous one first; the next kind a
    collected test needs starts in the background meanwhile."""

    def __init__(self, root: Path, postgres: PostgresServer, request: pytest.FixtureRequest) -> None:
        self.root = root
        self.postgres = postgres
        self.request = request
        self.current: RunningCluster | None = None
        self.jwt_secret = secrets.token_urlsafe(64)
        self.used: set[str] = set()
        self.starting: dict[str, Future[RunningCluster]] = {}
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluster-start")

    def get(self, kind: str) -> RunningCluster:
        if self.current and self.current.kind == kind:
            self.current.cluster.check_alive()
            return self.current
        self.stop()
        self.used.add(kind)
        started = self.starting.pop(kind, None)
        self.current = started.result() if started else self._start(kind, *self._fixtures(kind))
        self._start_next()
        return self.current

    def _start_next(self) -> None:
        """Start, in a thread, the first unused kind that a collected test asks for."""
        needed = [
            kind
            for kind in STORE_KINDS
            if kind not in self.used
            and kind not in self.starting
            and any(f"{kind}_cluster" in item.fixturenames for item in self.request.session.items)
        ]
        if needed:
            kind = needed[0]
            # Fixtures resolve here, in pytest's thread; only the subprocesses and waits go to the thread.
            self.starting[kind] = self._starter.submit(self._start, kind, *self._fixtures(kind))

    def _fixtures(self, kind: str) -> tuple[EmulatorHandle, S3Server | None]:
        emulator = self.request.getfixturevalue("cluster_emulator")
        return emulator, self.request.getfixturevalue("s3_server") if kind == "s3" else None

    def _start(self, kind: str, emulator: EmulatorHandle, s3: S3Server | None) -> RunningCluster:
        home = self.root / f"home-{kind}"
        home.mkdir()
        database = f"airflow_{kind}"
        self.postgres.sql(f"CREATE DATABASE {database} TEMPLATE {TEMPLATE_DB}")
        ledger_database = f"claude_batches_{kind}"
        self.postgres.sql(f"CREATE DATABASE {ledger_database}")
        extra: dict[str, str] = {}
        if s3:
            results_root = s3.root_uri(f"integration-{int(time.time())}")
            extra = connection_env(s3.conn_id, s3.endpoint_url)
        else:
            results_root = f"file://{home / 'claude_batches'}"
        port = free_port()
        env = {
            **harness_env(home, self.root, port),
            **deployment_env(
                sql_alchemy_conn=self.postgres.url(database),
                executor="LocalExecutor",
                api_url=f"http://127.0.0.1:{port}",
                dags_folder=str(DAGS_FOLDER),
                policy_file=str(POLICY_FILE),
                results_root=results_root,
                results_conn_id=s3.conn_id if s3 else None,
                anthropic_url=emulator.base_url,
                anthropic_api_key=emulator.api_key,
                jwt_secret=self.jwt_secret,
                ledger_connection=self.postgres.connection(ledger_database),
            ),
            **extra,
        }
        # The deployment's own ledger database, migrated as the compose init step does.
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "claude-batches", "db", "migrate"],
            env=env,
            capture_output=True,
            text=True,
        )
        if migrate.returncode:
            raise HarnessError(f"ledger migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-4000:]}")
        cluster = AirflowCluster(name=kind, home=home, env=env, api_port=port)
        _ACTIVE[kind] = cluster
        cluster.start()
        client = AirflowClient(cluster.api_url, home / "simple_auth_manager_passwords.json.generated")
        try:
            cluster.wait_ready()
            client.login()
            # The self-test's pool, over REST: an `airflow pools set` process would cost seconds of imports.
            client.request(
                "POST",
                "/pools",
                json={
                    "name": SELFTEST_POOL,
                    "slots": 1,
                    "description": "harness self-test",
                    "include_deferred": True,
                },
            )
        except Exception as exc:
            # Not current yet, so nothing else would stop it: stop it here, logs in the error.
            client.close()
            cluster.stop()
            _ACTIVE.pop(kind, None)
            raise HarnessError(f"cluster {kind} did not come up: {exc}\n\n{cluster.log_tails()}") from exc
        _REPORT["clusters"][kind] = {"ready_seconds": round(cluster.ready_after, 1)}
        return RunningCluster(kind, cluster, client, results_root, self.postgres.url(ledger_database), s3)

    def close(self) -> None:
        """Stop the current cluster and any started in the background but never used."""
        self.stop()
        self._starter.shutdown(wait=True)
        for started in self.starting.values():
            if started.exception() is None:
                self.current = started.result()
                self.stop()
        self.starting.clear()

    def stop(self) -> None:
        if not self.current:
            return
        running, self.current = self.current, None
        entry = _REPORT["clusters"].setdefault(running.kind, {})
        entry["memory_kib"] = running.cluster.memory_report()
        entry["cpu_seconds"] = running.cluster.cpu_report()
        entry["up_seconds"] = round(time.monotonic() - running.cluster.started_at, 1)
        running.client.close()
        began = time.monotonic()
        entry["killed_after_grace"] = running.cluster.stop()
        entry["stop_seconds"] = round(time.monotonic() - began, 1)
        _ACTIVE.pop(running.kind, None)


def harness_env(home: Path, root: Path, api_port: int) -> dict[str, str]:
    """What only the test deployment sets, on top of ``docker/airflow.env`` (each setting says why)."""
    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {},
        },
        # The self-test DAG lives outside the repo's dags/, in a second bundle.
        {
            "name": "integration-harness",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(root / "harness-dags")},
        },
    ]
    return {
        **process_env(home),
        **read_env_file(),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        # Only the runs the tests trigger: no scheduled run appears when a DAG is unpaused.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # Each DAG file parsed once: no test edits a DAG file, and every parse of one of ours pays the
        # provider's imports in a fresh process (5-20 s of CPU). Re-parsing every 15 s, as deployed,
        # kept two parser processes busy all session on a 2-core machine.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
        # A worker parses the DAG file before running a task; on a loaded 2-core machine that took over the
        # default 30 s once, and the task came back only after a 60 s reschedule.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        # The dashboard's charts read the ledger on every view: tests plant data after earlier views.
        "AIRFLOW__CLAUDE_BATCHES__DASHBOARD_CHARTS_SECONDS": "0",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        # Free ports instead of 8793/8794, so two test sessions on one machine don't collide.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }


@pytest.fixture(scope="session")
def cluster_emulator() -> Iterator[EmulatorHandle]:
    """The Anthropic API of the clusters: an emulator of their own, with batches that end in
    ``BATCH_SECONDS``, before the trigger's first poll. A trigger that fired that early would hit
    an open Airflow 3.3 race (the deferring workload's late executor event fails the resumed task:
    apache/airflow#67287, #72716); the suite proves ``[claude_batches] trigger_min_seconds`` (the
    default 10 s) keeps the example DAGs clear of it."""
    with run_emulator(processing_seconds=BATCH_SECONDS) as handle:
        yield handle


@pytest.fixture(scope="session")
def integration_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="acb-integration-"))
    root.chmod(0o755)  # PostgreSQL runs as the `postgres` user and must reach its data dir inside
    (root / "harness-dags").mkdir()
    (root / "harness-dags" / f"{SELFTEST_DAG_ID}.py").write_text(SELFTEST_DAG)
    (root / "harness-dags" / f"{CRASH_DAG_ID}.py").write_text(CRASH_DAG)
    _REPORT["root"] = str(root)
    return root


@pytest.fixture(scope="session")
def postgres(integration_root: Path) -> Iterator[PostgresServer]:
    """PostgreSQL with ``airflow_template``: migrated, team pools created, cloned by each cluster."""
    began = time.monotonic()
    server = PostgresServer(integration_root / "postgres")
    try:
        server.start()
        server.sql(f"CREATE DATABASE {TEMPLATE_DB}")
        home = integration_root / "home-init"
        home.mkdir()
        env = {
            **harness_env(home, integration_root, free_port()),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": server.url(TEMPLATE_DB),
            "AIRFLOW__CLAUDE_BATCHES__POLICY_FILE": str(POLICY_FILE),
        }
        run_init(env)
        _REPORT["database_seconds"] = round(time.monotonic() - began, 1)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def clusters(
    integration_root: Path, postgres: PostgresServer, request: pytest.FixtureRequest
) -> Iterator[ClusterManager]:
    manager = ClusterManager(integration_root, postgres, request)
    _REPORT.setdefault("integration_started", time.monotonic())
    try:
        yield manager
    finally:
        manager.close()
        _REPORT["integration_seconds"] = round(time.monotonic() - _REPORT.pop("integration_started"), 1)


@pytest.fixture(scope="session")
def file_runs(clusters: ClusterManager) -> dict[str, Observed]:
    """The examples triggered by hand on the file cluster (no logical date, as from the UI or the REST
    API), once per session: the example-DAG tests check these runs and the dashboard tests show them."""
    return run_examples(clusters.get("file"), logical_date=None)


@pytest.fixture
def file_cluster(clusters: ClusterManager) -> RunningCluster:
    """The cluster storing results under a ``file://`` root."""
    return clusters.get("file")


@pytest.fixture
def s3_cluster(clusters: ClusterManager) -> RunningCluster:
    """The cluster storing results on ``s3://`` (moto_server)."""
    return clusters.get("s3")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _ACTIVE:
        for kind, cluster in _ACTIVE.items():
            report.sections.append((f"Airflow process logs ({kind} cluster)", cluster.log_tails()))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if "root" not in _REPORT:
        return
    _REPORT["pytest_session_seconds"] = round(time.monotonic() - _STARTED, 1)
    path = Path(_REPORT["root"]) / "integration-report.json"
    path.write_text(json.dumps(_REPORT, indent=2))
    terminalreporter.write_sep("-", "integration suite")
    terminalreporter.write_line(f"report: {path}")
    for key in ("pytest_session_seconds", "integration_seconds", "database_seconds"):
        if key in _REPORT:
            terminalreporter.write_line(f"{key}: {_REPORT[key]}")
    for kind, entry in _REPORT["clusters"].items():
        memory = entry.get("memory_kib", {})
        terminalreporter.write_line(
            f"cluster {kind}: ready in {entry.get('ready_seconds')}s, up {entry.get('up_seconds')}s, "
            f"peak RSS sum {memory.get('sum_vmhwm', 0) / 1024:.0f} MiB (VmHWM), "
            f"{memory.get('sampled_peak_rss_sum', 0) / 1024:.0f} MiB (sampled); "
            + ", ".join(f"{name} {memory[name] / 1024:.0f}" for name in AIRFLOW_PROCESSES if name in memory)
        )
        cpu = entry.get("cpu_seconds", {})
        terminalreporter.write_line(
            f"cluster {kind}: CPU {cpu.get('sum', 0):.0f}s; "
            + ", ".join(f"{name} {cpu[name]:.0f}s" for name in AIRFLOW_PROCESSES if name in cpu)
        )
