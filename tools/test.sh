#!/usr/bin/env bash
# Installs everything the test suite needs on a bare Debian machine, then runs it all.
# Usage: bash tools/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v logger >/dev/null || missing+=(bsdutils)
command -v rsyslogd >/dev/null || missing+=(rsyslog)
# initdb and pg_ctl for the tests' throwaway PostgreSQL clusters (not on PATH on Debian)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

(cd tests/node && npm install --no-audit --no-fund --loglevel=error)

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q '.[test]'
# Regenerate Twisted's plugin cache so twistd finds logatron at once.
.venv/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

# Layering, types and lint first: each is a few seconds, the suite is minutes.
.venv/bin/lint-imports --no-logo
.venv/bin/mypy logsvc
.venv/bin/ruff check logsvc tests bench twisted
# The documentation builds without a warning (docs/conf.py).
.venv/bin/python -m sphinx -W -q -b html docs docs/_build/html

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec .venv/bin/python -m pytest "$@"
