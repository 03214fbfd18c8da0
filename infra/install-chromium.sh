#!/usr/bin/env bash
# The browser the UI tests drive: Debian's chromium package. Playwright cannot download browsers here,
# so its Python package drives this one (executable_path). Run by `make test` when it is missing.
set -euo pipefail
if [ -x "${LEPTON_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: no apt-get here; install Chromium and set LEPTON_CHROMIUM to its path" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-chromium: run as root, or: sudo apt-get install chromium" >&2; exit 1; }
  SUDO=sudo
fi
echo "installing Debian's chromium for the UI tests (apt-get, once)"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
chromium --version
