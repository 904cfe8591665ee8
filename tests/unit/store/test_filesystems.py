"""The core runs without the ``[s3]`` extra, and an s3:// path then names the extra to install."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_claude_batches.exceptions import MissingExtraError
from airflow_claude_batches.store.filesystems import require_filesystem

#: Run in a fresh interpreter where the distributions of the [s3] extra cannot be imported, as on an
#: install without it: every module of the package imports, a file store works, S3 says what to do.
WITHOUT_S3 = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    BLOCKED = ("airflow.providers.amazon", "s3fs", "boto3", "botocore", "aiobotocore")
    HIDDEN = {"apache-airflow-providers-amazon", "s3fs", "boto3", "botocore", "aiobotocore"}

    class NoS3:
        # Neither importable nor installed: their modules and distributions (entry points) are gone.

        def __init__(self, finder=None):
            self.finder = finder

        def find_spec(self, name, path=None, target=None):
            if name.startswith(BLOCKED):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return self.finder.find_spec(name, path, target) if self.finder else None

        def find_distributions(self, *args, **kwargs):
            found = self.finder.find_distributions(*args, **kwargs) if self.finder else ()
            return (d for d in found if d.metadata["Name"].lower() not in HIDDEN)

        def invalidate_caches(self):
            if self.finder and hasattr(self.finder, "invalidate_caches"):
                self.finder.invalidate_caches()

    import importlib_metadata  # Airflow's discovery: it adds its own finder to sys.meta_path on import

    sys.meta_path[:] = [NoS3(), *(NoS3(f) if hasattr(f, "find_distributions") else f for f in sys.meta_path)]

    import airflow_claude_batches as package
    from airflow_claude_batches.exceptions import MissingExtraError
    from airflow_claude_batches.jobs.plan import JobRejected, iter_records
    from airflow_claude_batches.store.paths import store_root

    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if ".migrations." not in module.name:  # Alembic's scripts run inside a migration only
            importlib.import_module(module.name)

    root = store_root(f"file://{sys.argv[1]}/store")
    root.mkdir(parents=True)
    (root / "probe.txt").write_text("ok")
    assert (root / "probe.txt").read_text() == "ok"

    try:
        store_root("s3://bucket/prefix", "aws_default")
    except MissingExtraError as error:
        print("store:", error)
    try:
        list(iter_records("s3://bucket/requests.jsonl"))
    except JobRejected as error:
        print("requests:", error)
    print("blocked:", sorted(m for m in sys.modules if m.startswith(BLOCKED)))
    """
)


def test_core_runs_without_the_s3_extra_and_names_it(tmp_path):
    env = {**os.environ, "AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT": ""}
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_S3, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    extra = "pip install 'airflow-claude-batches[s3]'"
    assert extra in lines["store"]
    assert extra in lines["requests"] and "Nothing was sent" in lines["requests"]
    assert lines["blocked"] == "[]"


def test_served_schemes_pass_through(tmp_path):
    local = ObjectStoragePath(f"file://{tmp_path}")
    assert require_filesystem(local) is local
    s3 = ObjectStoragePath("s3://bucket/prefix", conn_id="aws_default")  # the test extra brings [s3]
    assert require_filesystem(s3) is s3


def test_a_scheme_no_extra_serves_is_refused_with_what_to_do():
    with pytest.raises(MissingExtraError, match=r"gs://.*install the Airflow provider"):
        require_filesystem(ObjectStoragePath("gs://bucket/key"))  # no Google provider here
