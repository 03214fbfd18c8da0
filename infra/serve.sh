#!/usr/bin/env bash
# `make serve`: the whole loop on this machine. A Prefect server on 127.0.0.1, the process work pool,
# every deployment of prefect.yaml (build with its drift trigger, score, monitor, feedback, rollback),
# the alerting automations of infra/automations.yaml, and a
# worker in the foreground. Ctrl-C stops the worker and the server.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
PORT=${LEPTON_PREFECT_PORT:-4200}
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.lepton/prefect}
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export LEPTON_PROJECT_DIR=$PWD
mkdir -p "$PREFECT_HOME" .lepton/incoming  # the score deployment's inbox

"$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$PREFECT_HOME/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 180); do
  if "$BIN/python" -c "import httpx,sys; sys.exit(httpx.get('$PREFECT_API_URL/health', timeout=2).status_code != 200)" 2>/dev/null; then
    break
  fi
  kill -0 $SERVER 2>/dev/null || { echo "prefect server exited; see $PREFECT_HOME/server.log" >&2; exit 1; }
  sleep 1
done
"$BIN/prefect" --no-prompt work-pool create lepton-process --type process --overwrite >/dev/null
"$BIN/prefect" --no-prompt deploy --all
# Alerting (infra/automations.yaml): failed runs, drift, degraded performance, refused promotions, posted
# to LEPTON_ALERT_WEBHOOK_URL; without it, says so and carries on.
"$BIN/python" infra/automations.py
cat <<TXT

Prefect UI:   http://127.0.0.1:$PORT   (Deployments -> build -> Run -> Custom run: the BuildConfig form)
From a shell: PREFECT_API_URL=$PREFECT_API_URL $BIN/prefect deployment run build/build --params '{"config": {"reason": "manual"}}'
Score:        drop images into .lepton/incoming/ (scored every hour, then moved to .lepton/processed/<date>/)
Drift:        monitor runs at :30 each hour; a drift event starts build/build by its trigger

Starting a worker on pool lepton-process (Ctrl-C to stop everything).
TXT
"$BIN/prefect" worker start --pool lepton-process
