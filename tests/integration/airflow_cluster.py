"""A real Airflow deployment for integration tests: PostgreSQL, and the api-server, scheduler,
dag-processor and triggerer as separate processes with the LocalExecutor.

``dag.test()`` runs a trigger inline and ignores pools; only real processes show what users get:
deferred tasks holding pool slots, the trigger running in the triggerer, the worker resuming the
task. Everything here is plain subprocesses and HTTP, so a failure reads like a deployment problem.

- :class:`PostgresServer`: a throwaway cluster (``initdb`` in a temp dir, free port, run as the
  ``postgres`` user when we are root, because postgres refuses to run as root).
- :func:`deployment_env`: the settings a deployment must set itself (URLs, paths, executor,
  connections); docker-compose.yaml sets the same keys (tests/integration/test_docker_compose.py
  checks it), and both read the location-independent rest from ``docker/airflow.env``.
- :class:`AirflowCluster`: the four processes, each in its own process group, stopped by group.
- :class:`AirflowClient`: the REST calls the tests need (token, trigger, task states, pools, logs).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
POLICY_FILE = DAGS_FOLDER / "claude_batches_policy.yaml"
SHARED_ENV_FILE = REPO / "docker" / "airflow.env"
INIT_SCRIPT = REPO / "docker" / "airflow-init.sh"
AIRFLOW_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
LEDGER_CONN_ID = "claude_batches_ledger"
ADMIN_USER = "admin"

T = TypeVar("T")


class HarnessError(RuntimeError):
    """The test deployment could not be brought up; the message says what to fix."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_env_file(path: Path = SHARED_ENV_FILE) -> dict[str, str]:
    """``KEY=VALUE`` lines of a docker-compose env file (comments and blank lines skipped)."""
    settings: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        settings[key.strip()] = value.strip()
    return settings


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.5, what: str = "condition"
) -> T:
    """Call ``probe`` until it returns something truthy; its last error is chained on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last_error, result = exc, None
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}") from last_error
        time.sleep(interval)


# --------------------------------------------------------------------------------------- PostgreSQL


def find_pg_bindir() -> Path:
    """The newest PostgreSQL server binaries (``PG_BINDIR`` overrides); a clear error if none."""
    if override := os.environ.get("PG_BINDIR"):
        candidates = [Path(override)]
    else:
        found = Path("/usr/lib/postgresql").glob("*/bin")
        candidates = sorted(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
        if initdb := shutil.which("initdb"):
            candidates.insert(0, Path(initdb).parent)
    for bindir in reversed(candidates):
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    raise HarnessError(
        "PostgreSQL server binaries not found (looked for initdb in /usr/lib/postgresql/*/bin, on PATH "
        "and in $PG_BINDIR). Install them: `apt-get update && apt-get install -y postgresql`."
    )


class PostgresServer:
    """A throwaway PostgreSQL cluster in ``root``, listening on 127.0.0.1 on a free port.

    Durability is off (fsync, synchronous_commit): the data dies with the test session anyway.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.bindir = find_pg_bindir()
        self._user = self._service_user()

    @staticmethod
    def _service_user() -> str | None:
        """``postgres`` when we are root (postgres refuses to run as root), else nobody to switch to."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise HarnessError(
                "running as root but there is no `postgres` user to run the server as; "
                "install Debian's `postgresql` package (it creates the user)"
            ) from None
        return "postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd="/")
        if done.returncode:
            raise HarnessError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # the postgres user must reach its data dir inside our temp dir
        self.data.mkdir()
        if self._user:
            shutil.chown(self.data, self._user)
            self.log.touch()
            shutil.chown(self.log, self._user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        """Stop the server and drop its data (~70 MB); the server log stays for post-mortems."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.data, ignore_errors=True)

    def sql(self, statement: str, database: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE DATABASE needs that)."""
        import psycopg2

        connection = psycopg2.connect(self.url(database, driver=None))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def connection(self, database: str) -> dict[str, Any]:
        """An Airflow ``postgres`` connection (as AIRFLOW_CONN_* JSON) to ``database``."""
        return {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": self.port,
            "login": "postgres",
            "schema": database,
        }

    def url(self, database: str, driver: str | None = "psycopg2") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"


# ------------------------------------------------------------------------------------------ settings


def deployment_env(
    *,
    sql_alchemy_conn: str,
    executor: str,
    api_url: str,
    dags_folder: str,
    policy_file: str,
    results_root: str,
    anthropic_url: str,
    anthropic_api_key: str,
    jwt_secret: str,
    ledger_connection: Mapping[str, Any],
    results_conn_id: str | None = None,
) -> dict[str, str]:
    """The settings each deployment sets for itself, on top of ``docker/airflow.env``.

    docker-compose.yaml sets exactly these keys in ``x-airflow-common`` (checked by
    test_docker_compose.py); the values differ only by where things run.
    """
    env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__DAGS_FOLDER": dags_folder,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW__CLAUDE_BATCHES__POLICY_FILE": policy_file,
        "AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT": results_root,
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT": json.dumps(
            {"conn_type": "anthropic", "host": anthropic_url, "password": anthropic_api_key}
        ),
        # The ledger's own PostgreSQL database (never Airflow's metadata database).
        "AIRFLOW__CLAUDE_BATCHES__LEDGER_CONN_ID": LEDGER_CONN_ID,
        f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}": json.dumps(dict(ledger_connection)),
    }
    if results_conn_id:
        env["AIRFLOW__CLAUDE_BATCHES__RESULTS_CONN_ID"] = results_conn_id
    return env


def process_env(home: Path) -> dict[str, str]:
    """Our interpreter's environment minus anything Airflow- or Anthropic-specific from the caller."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "ANTHROPIC_", "AWS_"))
    }
    venv_bin = str(Path(sys.executable).parent)
    inherited["PATH"] = f"{venv_bin}{os.pathsep}{inherited.get('PATH', '')}"
    inherited["AIRFLOW_HOME"] = str(home)
    inherited["PYTHONUNBUFFERED"] = "1"
    return inherited


def airflow_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow", *args]


# ----------------------------------------------------------------------------------------- processes


def _pids_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Field 5 of /proc/PID/stat is the process group; the command name (field 2) may hold spaces.
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def _status_kib(pid: int, field_name: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int, *, reaped_children: bool) -> float:
    """User + system CPU of ``pid`` (fields 14-15 of /proc/PID/stat), plus that of its waited-for
    children (fields 16-17) when asked: task runners and parsers that already exited."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(tick) for tick in fields[11 : 15 if reaped_children else 13])
        return ticks / os.sysconf("SC_CLK_TCK")
    return 0.0


@dataclass
class ManagedProcess:
    """One Airflow command in its own process group (``setsid``), its output in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pgid(self) -> int:
        return self.popen.pid  # start_new_session=True makes the child a session and group leader

    def group_memory_kib(self, field_name: str) -> int:
        return sum(_status_kib(pid, field_name) for pid in _pids_in_group(self.pgid))

    def group_cpu_seconds(self) -> float:
        """CPU used so far by the group's live processes and the children they reaped."""
        return sum(_cpu_seconds(pid, reaped_children=True) for pid in _pids_in_group(self.pgid))

    def signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signum)

    def running(self) -> bool:
        """The leader or any process of its group is still alive (children outlive leaders)."""
        return self.popen.poll() is None or bool(_pids_in_group(self.pgid))

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class AirflowCluster:
    """api-server, scheduler, dag-processor and triggerer sharing ``env`` (one AIRFLOW_HOME, one DB)."""

    name: str
    home: Path
    env: dict[str, str]
    api_port: int
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    peak_rss_kib: int = 0
    started_at: float = 0.0
    ready_after: float = 0.0
    _sampler: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        self.started_at = time.monotonic()
        logs = self.home / "process-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in AIRFLOW_PROCESSES:
            args = ("api-server", "--port", str(self.api_port)) if name == "api-server" else (name,)
            log = logs / f"{name}.log"
            with log.open("ab") as out:
                popen = subprocess.Popen(
                    airflow_command(*args),
                    env=self.env,
                    cwd=self.home,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.processes[name] = ManagedProcess(name, popen, log)
        self._sampler = threading.Thread(target=self._sample_memory, name=f"rss-{self.name}", daemon=True)
        self._sampler.start()

    def _sample_memory(self) -> None:
        while not self._stopping.wait(1.0):
            total = sum(process.group_memory_kib("VmRSS") for process in self.processes.values())
            self.peak_rss_kib = max(self.peak_rss_kib, total)

    def check_alive(self) -> None:
        dead = {n: p.popen.returncode for n, p in self.processes.items() if p.popen.poll() is not None}
        if dead:
            raise HarnessError(f"Airflow processes exited: {dead}\n\n{self.log_tails()}")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the api-server answers and reports the scheduler, triggerer and dag-processor healthy."""

        def healthy() -> bool:
            self.check_alive()
            health = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
            components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            return all((health.get(c) or {}).get("status") == "healthy" for c in components)

        wait_for(healthy, timeout=timeout, what=f"cluster {self.name} to report healthy")
        self.ready_after = time.monotonic() - self.started_at

    def memory_report(self) -> dict[str, int]:
        """Peak RSS (KiB) per process group from VmHWM (live processes only), plus the sampled sum."""
        report = {name: process.group_memory_kib("VmHWM") for name, process in self.processes.items()}
        report["sum_vmhwm"] = sum(report.values())
        report["sampled_peak_rss_sum"] = self.peak_rss_kib
        return report

    def cpu_report(self) -> dict[str, float]:
        """CPU seconds per process group so far (where a 2-core machine's time goes), and their sum."""
        report = {name: round(process.group_cpu_seconds(), 1) for name, process in self.processes.items()}
        report["sum"] = round(sum(report.values()), 1)
        return report

    def stop(self, grace: float = 15.0) -> list[str]:
        """SIGTERM every process group at once, SIGKILL what is left after ``grace`` seconds;
        returns the names of the groups that had to be killed."""
        self._stopping.set()
        for process in self.processes.values():
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.running() for p in self.processes.values()):
            time.sleep(0.2)
        killed = [name for name, process in self.processes.items() if process.running()]
        for process in self.processes.values():
            process.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=5)
        return killed

    def log_tails(self, lines: int = 60) -> str:
        return "\n\n".join(
            f"----- {name} ({process.log}) -----\n{process.tail(lines)}"
            for name, process in self.processes.items()
        )

    def process_log(self, name: str) -> str:
        return self.processes[name].log.read_text(errors="replace")


def run_init(env: Mapping[str, str]) -> None:
    """``docker/airflow-init.sh``: the same migrate-and-pools step the compose ``airflow-init`` runs."""
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.environ['PATH'])}"}
    done = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise HarnessError(
            f"airflow-init.sh failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )


# ---------------------------------------------------------------------------------------------- REST

TERMINAL_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


class AirflowClient:
    """The public REST API (``/api/v2``) with a bearer token from the simple auth manager."""

    def __init__(self, base_url: str, password_file: Path) -> None:
        self.base_url = base_url
        self._password_file = password_file
        self._http = httpx.Client(base_url=base_url, timeout=30)

    def close(self) -> None:
        self._http.close()

    def login(self) -> None:
        password = json.loads(self._password_file.read_text())[ADMIN_USER]
        response = self._http.post("/auth/token", json={"username": ADMIN_USER, "password": password})
        response.raise_for_status()
        self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, f"/api/v2{path}", **kwargs)
        if response.status_code >= 400:
            raise httpx.HTTPStatusError(
                f"{method} {path} -> {response.status_code}: {response.text[:2000]}",
                request=response.request,
                response=response,
            )
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def dag_exists(self, dag_id: str) -> bool:
        return self._http.get(f"/api/v2/dags/{dag_id}").status_code == 200

    def wait_for_dag(self, dag_id: str, timeout: float = 90.0) -> None:
        """Until the dag-processor has serialized ``dag_id``; import errors are shown on timeout."""
        try:
            wait_for(lambda: self.dag_exists(dag_id), timeout=timeout, what=f"DAG {dag_id} to be parsed")
        except TimeoutError as exc:
            errors = self.get("/importErrors").get("import_errors", [])
            raise TimeoutError(f"{exc}; import errors: {json.dumps(errors, indent=1)[:4000]}") from None

    def trigger(
        self, dag_id: str, *, logical_date: datetime | None = None, conf: Mapping[str, Any] | None = None
    ) -> str:
        """Unpause ``dag_id`` and start a manual run; returns its run id.

        Without ``logical_date`` the run has none, like a run triggered from the UI or API in Airflow 3
        (``ds`` and friends are then undefined in templates); with one, it looks like a scheduled run.
        """
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        body = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": dict(conf or {})}
        return str(self.request("POST", f"/dags/{dag_id}/dagRuns", json=body).json()["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag_id}/dagRuns/{run_id}"))

    def ended_state(self, dag_id: str, run_id: str) -> str | None:
        """``success`` or ``failed`` once the run has ended, else None."""
        state = self.dag_run(dag_id, run_id)["state"]
        return state if state in {"success", "failed"} else None

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Task instances of a run by task id (map index -1 only: the examples map nothing)."""
        listing = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)
        return {ti["task_id"]: ti for ti in listing["task_instances"] if ti.get("map_index", -1) == -1}

    def pool(self, name: str) -> dict[str, Any]:
        return dict(self.get(f"/pools/{name}"))

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log as text (one line per structured log event)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        content = self.get(path, full_content="true").get("content", [])
        return "\n".join(
            entry.get("event", "") if isinstance(entry, dict) else str(entry) for entry in content
        )


def follow_runs(
    client: AirflowClient,
    runs: Mapping[str, str],
    *,
    timeout: float,
    on_poll: Callable[[str, dict[str, dict[str, Any]]], None] | None = None,
    interval: float = 0.5,
) -> dict[str, tuple[dict[str, Any], set[str]]]:
    """Poll runs (``{dag_id: run_id}``, run concurrently) until all end; per DAG, the final run and
    every ``task_id:state`` seen, so a deferral shorter than the trigger's poll interval is still
    caught. ``on_poll(dag_id, task_instances)`` sees each poll of an unfinished run."""
    seen: dict[str, set[str]] = {dag_id: set() for dag_id in runs}
    ended: dict[str, tuple[dict[str, Any], set[str]]] = {}
    deadline = time.monotonic() + timeout
    while len(ended) < len(runs):
        for dag_id, run_id in runs.items():
            if dag_id in ended:
                continue
            tis = client.task_instances(dag_id, run_id)
            seen[dag_id].update(f"{task_id}:{ti['state']}" for task_id, ti in tis.items())
            if on_poll:
                on_poll(dag_id, tis)
            run = client.dag_run(dag_id, run_id)
            if run["state"] in {"success", "failed"}:
                ended[dag_id] = run, seen[dag_id]
        if len(ended) < len(runs):
            if time.monotonic() > deadline:
                late = {d: sorted(seen[d]) for d in runs if d not in ended}
                raise TimeoutError(f"runs still going after {timeout}s: {late}")
            time.sleep(interval)
    return ended


def dag_defined_in(folder: Path, dag_id: str) -> bool:
    """Whether any file of ``folder`` mentions ``dag_id``: lets a test skip, before anything starts,
    when its DAG has not been written yet."""
    return folder.is_dir() and any(dag_id in path.read_text(errors="replace") for path in folder.glob("*.py"))
