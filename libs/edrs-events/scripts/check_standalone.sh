#!/usr/bin/env bash
# Installs edrs-events ALONE (no other EDRS package) with its extras into a fresh virtualenv in a
# temporary directory and runs its fast tests there; exits non-zero if either step fails.
set -euo pipefail

package_dir="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d -t edrs-events-standalone-XXXXXX)"
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "${package_dir}[postgres,cli,test]"

# The monorepo's pytest settings live in its root pyproject.toml, which an integrator does not have:
# give pytest the same few settings from a file of our own.
cat > "$work/pytest.ini" <<'INI'
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
addopts = -ra --strict-markers --import-mode=importlib -p no:cacheprovider
timeout = 300
markers =
    integration: talks to a real engine started from a pip package
    docker: needs a Docker engine (testcontainers); skipped where none runs
    slow: takes more than a few seconds
    fleet: starts the whole fleet
INI

# Copy the tests out of the monorepo and run them from the temp dir: no conftest.py or module of
# the monorepo is reachable, and edrs_events is the installed wheel.
cp -r "$package_dir/tests" "$work/tests"
cd "$work"
"$work/venv/bin/python" -c "import edrs_events; print('edrs_events from', edrs_events.__file__)"
# Its own --basetemp: a pytest session that starts under /tmp/pytest-of-<user> sets that folder back
# to 0700, which cuts the outer session's engines running as another user off from their data.
"$work/venv/bin/python" -m pytest -c "$work/pytest.ini" --rootdir "$work" --basetemp "$work/tmp" \
  tests -m "not slow" -q
