#!/usr/bin/env bash
# PostgreSQL's server binaries (initdb, postgres) for the cluster test, whose Prefect server runs on PostgreSQL as
# production servers do (tests/cluster.py starts a throwaway cluster in a temp folder; no system service is used).
# Run by `make test` when they are missing: Debian's postgresql package, without creating or starting its main cluster.
set -euo pipefail
if [ -x "${LEPTON_PG_BIN:-}/initdb" ] || command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-postgres: no apt-get here; install PostgreSQL's server and set LEPTON_PG_BIN to the folder holding initdb" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-postgres: run as root, or: sudo apt-get install postgresql" >&2; exit 1; }
  SUDO=sudo
fi
echo "installing Debian's postgresql for the cluster test (apt-get, once; no cluster is created or started)"
# postgresql-common reads this before creating the package's main cluster (and its service on port 5432).
$SUDO mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/lepton-no-main-cluster.conf >/dev/null
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
ls /usr/lib/postgresql/*/bin/initdb
