# Sourced by scripts/demo and scripts/dev: a local Airflow with the provider, on the Message Batches
# API emulator (no key, no network), the local results store and SQLite for both Airflow and the ledger.
#
# Set before sourcing: STATE (a folder for AIRFLOW_HOME, the store and logs), DAGS (the dags folder),
# POLICY (the governance file). Afterwards: the emulator runs (stopped on exit), the connection and the
# [claude_batches] config are exported, and both databases are migrated.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

export AIRFLOW_HOME="$STATE/airflow"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# As deployed (docker/airflow.env): jobs wait in the triggerer, not on a worker.
export AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=True
export AIRFLOW__CORE__DAGS_FOLDER="$DAGS"
export AIRFLOW__CLAUDE_BATCHES__POLICY_FILE="$POLICY"
export AIRFLOW__CLAUDE_BATCHES__RESULTS_ROOT="file://$STATE/claude_batches"
mkdir -p "$AIRFLOW_HOME"

EMULATOR_PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
claude-batches-emulator --host 127.0.0.1 --port "$EMULATOR_PORT" >"$STATE/emulator.log" 2>&1 &
emulator_pid=$!
trap 'kill $emulator_pid 2>/dev/null || true' EXIT
# The emulator stands in for the real API: the same connection with the real host and key works.
export AIRFLOW_CONN_ANTHROPIC_DEFAULT="{\"conn_type\": \"anthropic\", \"host\": \"http://127.0.0.1:$EMULATOR_PORT\", \"password\": \"local-key\"}"
python - "$EMULATOR_PORT" "$STATE" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_emulator/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(f"the emulator did not start: see {sys.argv[2]}/emulator.log")
PY

echo "== airflow db migrate (SQLite in $AIRFLOW_HOME)"
airflow db migrate >"$STATE/db-migrate.log" 2>&1 || { cat "$STATE/db-migrate.log"; exit 1; }
echo "== airflow claude-batches db migrate (the ledger: SQLite in $STATE/claude_batches/ledger.db)"
airflow claude-batches db migrate 2>>"$STATE/db-migrate.log" | tail -n 1
