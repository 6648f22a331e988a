#!/usr/bin/env bash
# The main job: set up, then walk through the seed chapter with convforge.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/convforge demo "$@"
