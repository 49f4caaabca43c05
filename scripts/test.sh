#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs dependencies if missing, builds, runs
# the whole suite, then the sanitizer job (scripts/sanitize.sh). Parity tests read
# ../shared/fixtures (or $ANOMALYSD_FIXTURES) and skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh "$@"
(cd build && ctest --output-on-failure --parallel "$(nproc)")

# The sanitizer job: parser and metric tests under ASan + UBSan, then 30 s of each fuzz target.
# ANOMALYSD_SKIP_SANITIZE=1 skips it (e.g. for a quick local run).
if [ -z "${ANOMALYSD_SKIP_SANITIZE:-}" ]; then scripts/sanitize.sh; fi
