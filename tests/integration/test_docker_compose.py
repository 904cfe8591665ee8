"""docker-compose.yaml deploys what the integration suite tests: same settings, same init step.

No Docker engine runs in CI, so the file's structure is checked here; ``docker compose config -q``
also runs when a docker client with the compose plugin is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from tests.integration.airflow_cluster import REPO, SHARED_ENV_FILE, deployment_env, read_env_file

COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
AIRFLOW_SERVICES = {
    "airflow-init": None,
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
SUPPORT_SERVICES = {"postgres", "redis", "minio", "minio-init", "emulator"}
# Compose variables without a default: what a user must put in .env.
REQUIRED_VARIABLES = {"AIRFLOW_JWT_SECRET": "x" * 96}
_VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` / ``${VAR:?message}`` with an empty shell environment."""
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, kind, default = match.groups()
        if kind == "-":
            return default
        assert name in REQUIRED_VARIABLES, f"${{{name}}} has no default and is not a documented variable"
        return REQUIRED_VARIABLES[name]

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(interpolate(yaml.safe_load(COMPOSE_FILE.read_text())))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def common_env(compose: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in compose["x-airflow-common"]["environment"].items()}


def test_services_present(services: dict[str, dict[str, Any]]) -> None:
    assert set(AIRFLOW_SERVICES) | SUPPORT_SERVICES <= set(services)
    for name, subcommand in AIRFLOW_SERVICES.items():
        if subcommand:
            assert services[name]["command"] == subcommand, name


def test_every_airflow_service_shares_the_common_settings(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], common_env: dict[str, str]
) -> None:
    common = compose["x-airflow-common"]
    for name in AIRFLOW_SERVICES:
        service = services[name]
        environment = {key: str(value) for key, value in service["environment"].items()}
        assert environment.items() >= common_env.items(), f"{name} changes a common setting"
        assert service["env_file"] == common["env_file"] == ["docker/airflow.env"], name
        assert service["image"] == common["image"], name
        assert "./dags:/opt/airflow/dags" in service["volumes"], f"{name} lacks the DAG folder mount"
    assert services["emulator"]["image"] == common["image"], "the emulator runs from the provider image"


def test_images_are_pinned(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    """No ``latest`` and no bare name: an upgrade is a change to the file; ours is the provider's version."""
    import tomllib

    for name, service in services.items():
        image, _, tag = service["image"].rpartition(":")
        assert image and tag and tag != "latest", f"{name}: {service['image']} is not pinned"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert compose["x-airflow-common"]["image"] == f"airflow-claude-batches:{version}"


def test_the_emulator_is_not_restarted_behind_your_back(services: dict[str, dict[str, Any]]) -> None:
    """Its batches live in memory: a silent restart would forget every batch in flight."""
    assert services["emulator"].get("restart", "no") == "no"


def test_settings_match_the_integration_suite(common_env: dict[str, str]) -> None:
    """The keys the tested deployment sets for itself are set here too, and the shared ones only in
    docker/airflow.env (one source: a setting can't drift between the two)."""
    shared = read_env_file(SHARED_ENV_FILE)
    tested = deployment_env(
        sql_alchemy_conn="postgresql+psycopg2://db/airflow",
        executor="LocalExecutor",
        api_url="http://127.0.0.1:8080",
        dags_folder="/dags",
        policy_file="/dags/claude_batches_policy.yaml",
        results_root="s3://bucket/prefix",
        results_conn_id="results",
        anthropic_url="http://127.0.0.1:8765",
        anthropic_api_key="key",
        jwt_secret="x" * 96,
        ledger_connection={"conn_type": "postgres"},
    )
    assert set(tested) <= set(common_env) | set(shared), set(tested) - set(common_env) - set(shared)
    assert not set(shared) & set(common_env), "set in both docker/airflow.env and docker-compose.yaml"
    assert common_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert len(common_env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64


def _service_port(service: dict[str, Any], flag: str = "--port") -> int:
    command = service["command"]
    return int(command[command.index(flag) + 1])


def test_urls_point_at_the_services(services: dict[str, dict[str, Any]], common_env: dict[str, str]) -> None:
    anthropic = json.loads(common_env["AIRFLOW_CONN_ANTHROPIC_DEFAULT"])
    assert anthropic["conn_type"] == "anthropic"
    emulator_url = urlsplit(anthropic["host"])
    assert emulator_url.hostname == "emulator"
    assert emulator_url.port == _service_port(services["emulator"])
    assert str(emulator_url.port) in " ".join(services["emulator"]["healthcheck"]["test"])

    execution = urlsplit(common_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (execution.hostname, execution.path) == ("airflow-apiserver", "/execution/")
    assert (
        f"{urlsplit(common_env['AIRFLOW__API__BASE_URL']).port}:{execution.port}"
        in (services["airflow-apiserver"]["ports"])
    )

    conn_id = common_env["AIRFLOW__CLAUDE_BATCHES__RESULTS_CONN_ID"]
    results_conn = json.loads(common_env[f"AIRFLOW_CONN_{conn_id.upper()}"])
    assert results_conn["conn_type"] == "aws"
    assert urlsplit(results_conn["extra"]["endpoint_url"]).hostname == "minio"
    bucket = urlsplit(common_env["AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT"]).netloc
    assert f"local/{bucket}" in services["minio-init"]["command"][0], "minio-init must create the bucket"
    assert results_conn["login"] == services["minio"]["environment"]["MINIO_ROOT_USER"]

    policy = Path(common_env["AIRFLOW__CLAUDE_BATCHES__POLICY_FILE"])
    assert policy.parent == Path(common_env["AIRFLOW__CORE__DAGS_FOLDER"]) == Path("/opt/airflow/dags")
    assert (REPO / "dags" / policy.name).exists() or not (REPO / "dags").exists()


def test_init_migrates_and_creates_pools_before_airflow_starts(
    services: dict[str, dict[str, Any]],
) -> None:
    init = services["airflow-init"]
    assert init["command"] == ["/opt/claude-batches/docker/airflow-init.sh"]
    assert "docker/airflow-init.sh /opt/claude-batches/docker/airflow-init.sh" in DOCKERFILE.read_text()
    for name in AIRFLOW_SERVICES.keys() - {"airflow-init"}:
        depends = services[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    one_shot = {"airflow-init", "minio-init"}
    for name, service in services.items():
        if name not in one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_dockerfile_installs_the_provider_on_airflow_3_3() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.\d+-python3\.11$", text, re.M)
    # The compose deployment keeps results on MinIO (S3) and the ledger on PostgreSQL: both extras.
    assert re.search(
        r'pip install .*"apache-airflow==\$\{AIRFLOW_VERSION\}" "/opt/claude-batches\[s3,postgres\]"', text
    )


def _compose_plugin() -> str | None:
    docker = shutil.which("docker")
    if not docker:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True)
    return docker if probe.returncode == 0 else None


@pytest.mark.skipif(_compose_plugin() is None, reason="no docker client with the compose plugin")
def test_docker_compose_config_is_valid(tmp_path: Path) -> None:
    docker = _compose_plugin()
    assert docker
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path), **REQUIRED_VARIABLES},
    )
    assert done.returncode == 0, done.stderr


def test_the_ledger_has_a_database_of_its_own(
    services: dict[str, dict[str, Any]], common_env: dict[str, str]
) -> None:
    """The ledger lives on the compose PostgreSQL, in a database created on first start, never Airflow's."""
    conn_id = common_env["AIRFLOW__CLAUDE_BATCHES__LEDGER_CONN_ID"]
    ledger = json.loads(common_env[f"AIRFLOW_CONN_{conn_id.upper()}"])
    assert (ledger["conn_type"], ledger["host"]) == ("postgres", "postgres")
    metadata_db = urlsplit(common_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).path.lstrip("/")
    assert ledger["schema"] != metadata_db
    init_sql = (REPO / "docker" / "postgres-init.sql").read_text()
    assert f"CREATE DATABASE {ledger['schema']}" in init_sql
    mounts = services["postgres"]["volumes"]
    assert any(m.startswith("./docker/postgres-init.sql:/docker-entrypoint-initdb.d/") for m in mounts)
    assert "airflow claude-batches db migrate" in (REPO / "docker" / "airflow-init.sh").read_text()
