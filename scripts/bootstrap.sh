# Sourced by scripts/demo, scripts/dev and scripts/test: makes .venv with exactly the versions of
# uv.lock (the project, its s3 and postgres extras and the test tools) and puts it on PATH.
# Idempotent and fast: a stamp of uv.lock's and pyproject.toml's hash skips uv when nothing changed;
# uv itself lives apart in .tools/ because `uv sync` removes from .venv whatever the lock does not name.
# After changing dependencies in pyproject.toml, run `.tools/bin/uv lock` and commit uv.lock.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TOOLS="$ROOT/.tools"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
UV_VERSION="0.13.9"

if [ ! -x "$TOOLS/bin/uv" ]; then
    "$PY" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
stamp="$VENV/.synced-$(cat "$ROOT/uv.lock" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    # --locked: fail if uv.lock is out of date with pyproject.toml instead of resolving anew, so CI
    # and every developer install the same versions. uv reuses its cache: offline after the first run.
    UV_PROJECT_ENVIRONMENT="$VENV" "$TOOLS/bin/uv" sync --quiet --locked --extra test \
        --python "$PY" --project "$ROOT"
    rm -f "$VENV"/.synced-* "$VENV"/.installed-*
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
