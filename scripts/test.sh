#!/usr/bin/env bash
# The whole test suite, with its own set-up: lint, then pytest (doctests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest -q "$@"
