#!/usr/bin/env bash
# Runs the whole suite. pytest's exit 5 (nothing collected) is a failure here:
# a suite that silently ran nothing must not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -ra "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
