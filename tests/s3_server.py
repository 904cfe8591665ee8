"""A real S3-protocol server for tests: ``moto_server`` in a subprocess on a free loopback port.

In-process ``moto.mock_aws`` patches botocore in a way that breaks ``ObjectStoragePath`` (s3fs talks
through aiobotocore), so tests talk to a real HTTP server instead, exactly like production talks to S3.

tests/conftest.py registers it as a plugin (``pytest_plugins = ["tests.s3_server"]``), so every test
can ask for the fixtures.

``s3_store`` yields ``(root_uri, conn_id)``: a fresh ``s3://bucket/<unique prefix>`` per test and the
id of an Airflow ``aws`` connection (defined through an ``AIRFLOW_CONN_<ID>`` environment variable)
whose extra points ``endpoint_url`` at the server.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "claude-batches-test"
_REGION = "us-east-1"
_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class S3Server:
    """A running moto server with one bucket and an Airflow connection pointing at it."""

    endpoint_url: str
    bucket: str
    conn_id: str

    def root_uri(self, prefix: str | None = None) -> str:
        """A store root under the bucket; a unique prefix by default so tests never see each other."""
        return f"s3://{self.bucket}/{prefix or uuid.uuid4().hex}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto_server_command() -> list[str]:
    # Prefer the console script beside the running interpreter (the project venv).
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    return [sys.executable, "-m", "moto.server"]


def _wait_until_up(endpoint_url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise TimeoutError(f"moto_server did not answer on {endpoint_url} within {timeout}s")


def connection_env(conn_id: str, endpoint_url: str) -> dict[str, str]:
    """The ``AIRFLOW_CONN_<ID>`` variable defining an ``aws`` connection to ``endpoint_url``."""
    value = {
        "conn_type": "aws",
        "login": _CREDENTIALS["aws_access_key_id"],
        "password": _CREDENTIALS["aws_secret_access_key"],
        "extra": {"endpoint_url": endpoint_url, "region_name": _REGION},
    }
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}


@contextmanager
def run_s3_server(bucket: str = BUCKET, conn_id: str | None = None) -> Iterator[S3Server]:
    """
    Start ``moto_server``, create ``bucket``, register ``conn_id``; undo all of it on exit.

    The connection id defaults to one naming the port: Airflow caches a filesystem per connection id
    for the life of the process, so each server gets its own id and never meets a stale cache.
    """
    import boto3

    port = _free_port()
    conn_id = conn_id or f"claude_batches_s3_{port}"
    endpoint_url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = connection_env(conn_id, endpoint_url)
    saved = {key: os.environ.get(key) for key in env}
    try:
        _wait_until_up(endpoint_url, proc)
        boto3.client("s3", endpoint_url=endpoint_url, region_name=_REGION, **_CREDENTIALS).create_bucket(
            Bucket=bucket
        )
        os.environ.update(env)
        yield S3Server(endpoint_url=endpoint_url, bucket=bucket, conn_id=conn_id)
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_shared: dict = {}  # the process's server while any registration of the fixture is in use


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """
    One moto server per test process, however many conftests or modules register this fixture.

    Each registration is its own session fixture to pytest; sharing the server keeps that at one
    process and one connection id.
    """
    if not _shared:
        stack = ExitStack()
        _shared.update(stack=stack, server=stack.enter_context(run_s3_server()), users=0)
    _shared["users"] += 1
    try:
        yield _shared["server"]
    finally:
        _shared["users"] -= 1
        if not _shared["users"]:
            _shared.pop("stack").close()
            _shared.clear()


@pytest.fixture
def s3_store(s3_server: S3Server) -> tuple[str, str]:
    """``(root_uri, conn_id)`` of an empty store root on the session's S3 server."""
    return s3_server.root_uri(), s3_server.conn_id
