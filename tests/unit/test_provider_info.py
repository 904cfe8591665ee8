"""The provider's metadata: a bad field here crashes every Airflow command that loads providers."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib import resources
from importlib.metadata import entry_points

import jsonschema
import pytest

from airflow_claude_batches import get_provider_info


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(resources.files("airflow").joinpath("provider_info.schema.json").read_text())


def test_provider_info_matches_airflow_schema(schema):
    jsonschema.validate(get_provider_info(), schema)


def test_package_name_is_the_distribution_name():
    (entry,) = [
        e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_claude")
    ]
    assert entry.dist is not None
    assert get_provider_info()["package-name"] == entry.dist.name


def test_every_declared_module_imports():
    info = get_provider_info()
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for group in info[kind]:
            for module in group["python-modules"]:
                importlib.import_module(module)


def test_schema_rejects_a_broken_field(schema):
    """The schema check above can fail: a wrong type or a missing required field is caught."""
    info = get_provider_info()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**info, "hooks": [{"python-modules": "not-a-list"}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in info.items() if k != "name"}, schema)


def test_airflow_cli_lists_the_provider():
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "get", "airflow-claude-batches", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "airflow-claude-batches" in out.stdout


def test_the_listed_plugin_is_the_one_airflow_loads():
    """``plugins`` names the class of the ``airflow.plugins`` entry point, under the plugin's own name."""
    (listed,) = get_provider_info()["plugins"]
    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.value.startswith("airflow_claude")]
    module, _, name = listed["plugin-class"].rpartition(".")
    plugin = getattr(importlib.import_module(module), name)
    assert plugin is entry.load()
    assert listed["name"] == plugin.name
