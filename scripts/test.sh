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

# The second platform: the whole suite again in a Debian 13 root on LibTorch 2.6 (needs root: it
# makes the root with mmdebstrap once, cached outside the work tree). ANOMALYSD_SKIP_TRIXIE=1 skips it.
if [ -z "${ANOMALYSD_SKIP_TRIXIE:-}" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    scripts/test-trixie.sh
  elif [ "${CI:-}" = true ]; then
    echo "test.sh: the Debian 13 / LibTorch 2.6 suite needs root (mmdebstrap, chroot); CI runs as root" >&2
    exit 1
  else
    echo "test.sh: skipping the Debian 13 / LibTorch 2.6 suite (needs root: sudo scripts/test-trixie.sh)"
  fi
fi
