#!/usr/bin/env bash
# `make serve`: the whole loop on this machine. A Prefect server on 127.0.0.1, the process work pool,
# every deployment of prefect.yaml (build with its drift trigger, score, monitor, feedback, rollback),
# the alerting automations of infra/automations.yaml, and a
# worker in the foreground. Ctrl-C stops the worker and the server.
set -euo pipefail
cd "$(dirname "$0")/.."
# On a terminal, job control: each process below gets its own process group, and the worker, run in the
# foreground, is the only one a Ctrl-C reaches. It stops its flow runs (marked Crashed, not left Running)
# while the server still answers; then this script stops the server and exits 0. make, never interrupted,
# exits 0 too. (Without job control Ctrl-C hits everything at once: the server went first and the worker
# hung on it.)
if [ -t 0 ]; then
  set -m
fi
BIN=${BIN:-.venv/bin}
PORT=${LEPTON_PREFECT_PORT:-4200}
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.lepton/prefect}
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export LEPTON_PROJECT_DIR=$PWD
mkdir -p "$PREFECT_HOME" .lepton/incoming  # the score deployment's inbox

"$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$PREFECT_HOME/server.log" 2>&1 &
SERVER=$!
disown "$SERVER" 2>/dev/null || true  # stopped below; no "Terminated" job notice
stop_server() {
  kill -TERM "$SERVER" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SERVER" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$SERVER" 2>/dev/null || true
}
trap stop_server EXIT
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
# A command started with & in a script without job control inherits SIGINT as ignored; the worker stops its
# process worker with SIGINT, so without this reset it would wait for ever (the hang of a second Ctrl-C).
# Without a terminal, setsid gives the worker a process group of its own, as job control does on one.
SETSID=$([[ $- == *m* ]] || echo setsid)
$SETSID "$BIN/python" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
  "$BIN/prefect" worker start --pool lepton-process &
WORKER=$!
if [[ $- == *m* ]]; then
  fg %+ >/dev/null || true
else
  # No terminal (a service manager, CI): SIGINT or SIGTERM to this script stops the worker the same way.
  trap 'kill -TERM $WORKER 2>/dev/null || true' INT TERM
  while kill -0 "$WORKER" 2>/dev/null; do wait "$WORKER" || true; done
fi
# The worker's flow-run processes report their final state before the server goes.
for _ in $(seq 1 300); do kill -0 -- "-$WORKER" 2>/dev/null || break; sleep 0.2; done
"$BIN/python" infra/stopped_runs.py lepton-process || true
echo "worker stopped; stopping the Prefect server"
