#!/usr/bin/env bash
# Every check, as CI runs it: lint, then the whole pytest suite (unit, app, browser).
# Expects .venv (the Makefile's `setup` makes it). With CI=true a missing browser is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's chromium for the browser tests…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif [ "${CI:-}" = true ]; then
    echo "CI=true but /usr/bin/chromium is missing and cannot be installed" >&2
    exit 1
  fi
fi

$PY -m ruff check .
set +e
$PY -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
