#!/usr/bin/env bash
# System packages the tests use for real: a PostgreSQL server (review store tests) and Debian's Chromium +
# ChromeDriver (review web app browser test). Installs from Debian's packages only when something is missing;
# a no-op otherwise. Needs root (or passwordless sudo) the first time.
set -euo pipefail
missing=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_ctl" ] || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
  echo "[system-deps] postgresql, chromium and chromium-driver present — nothing to install"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "[system-deps] missing Debian packages: ${missing[*]} — install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
echo "[system-deps] installing ${missing[*]} from Debian's packages"
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1 || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "[system-deps] installed in $(( $(date +%s) - start )) s"
