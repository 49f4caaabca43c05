#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs dependencies if missing, builds, runs
# the whole suite. Parity tests read ../shared/fixtures (or $ANOMALYSD_FIXTURES) and skip with a
# message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh "$@"
cd build
ctest --output-on-failure --parallel "$(nproc)"
