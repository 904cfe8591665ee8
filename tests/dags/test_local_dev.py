"""The README's "Run your own DAG locally" works as written: scripts/dev runs a new team's DAG folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "my_dags"


def test_the_readme_shows_the_example_files_as_they_are():
    readme = (REPO / "README.md").read_text()
    for path in sorted(EXAMPLE.iterdir()):
        assert path.read_text() in readme, f"README's copy of {path.relative_to(REPO)} differs"


def test_scripts_dev_runs_a_new_teams_dag_folder_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLAUDE_BATCHES"))}
    env["CLAUDE_BATCHES_DEV_STATE"] = str(tmp_path / "state")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "dev"), str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = done.stdout
    assert "airflow dags test research_paper_summaries" in out and "the run succeeded" in out
    assert "research / summaries / job 'summaries-" in out
    assert "requests: 2 (2 succeeded)" in out
    assert f"results:  file://{tmp_path}/state/claude_batches/research/summaries-" in out
    # The DAG's last task read the results back, joined to the team's keys: it prints "key summary".
    log = (tmp_path / "state" / "research_paper_summaries.log").read_text()
    printed = {line.split()[0] for line in log.splitlines() if line.startswith("arxiv-")}
    assert printed == {"arxiv-2401-00001", "arxiv-2401-00002"}
