#!/usr/bin/env bash
# The second tested platform: Debian 13 ("trixie") with its LibTorch 2.6 (SDPA attention, the
# TORCH_VERSION >= 2 code paths). Makes a trixie root with mmdebstrap once and caches it outside the
# work tree, installs the project's dependencies in it with scripts/install-deps.sh (the same
# script as on Debian 12), builds this work tree there and runs the whole test suite (ctest), with
# ../shared (the parity fixtures) bind-mounted beside it. CI runs it after the Debian 12 suite.
#
#   scripts/test-trixie.sh            # needs root (mmdebstrap, chroot, bind mounts)
#   scripts/test-trixie.sh --prepare  # only make (or check) the root
#   scripts/test-trixie.sh -R Ddim    # arguments go to ctest (here: only the tests matching Ddim)
#
# ANOMALYSD_TRIXIE_ROOT   where the root lives (default /var/cache/anomalysd/trixie); delete it to start over
# ANOMALYSD_TRIXIE_MIRROR the Debian mirror (default http://deb.debian.org/debian)
# The build folder and the ccache of the trixie build live inside the root, so a rerun rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(pwd -P)
shared=$(cd .. && pwd -P)/shared
root=${ANOMALYSD_TRIXIE_ROOT:-/var/cache/anomalysd/trixie}
mirror=${ANOMALYSD_TRIXIE_MIRROR:-http://deb.debian.org/debian}
start=$(date +%s)
stamp() { echo "[trixie $(( $(date +%s) - start ))s] $*"; }

# Never delete through a mount: a run killed by SIGKILL may have left the work tree or /proc bound
# inside a root. Unmount whatever is mounted below a folder before removing it, and remove on one
# file system only.
unmount_below() {
  { grep -o " $1/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
safe_remove() { [ -e "$1" ] || return 0; unmount_below "$1"; rm -rf --one-file-system "$1"; }

if [ "$(id -u)" -ne 0 ]; then echo "test-trixie: needs root (mmdebstrap, chroot, mount --bind)" >&2; exit 2; fi
command -v mmdebstrap >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap; }

# 1. the root: made once with mmdebstrap; then scripts/install-deps.sh runs inside it on every run
#    (idempotent: it installs only what a newer version of the script added)
if [ ! -f "$root/.anomalysd-root" ]; then
  stamp "making the trixie root in $root (mmdebstrap)"
  tmp_root="$root.tmp-$$"
  for old in "$root".tmp-*; do safe_remove "$old"; done
  mkdir -p "$(dirname "$root")"
  mmdebstrap --variant=apt --include=ca-certificates trixie "$tmp_root" "$mirror"
  echo "made by scripts/test-trixie.sh" > "$tmp_root/.anomalysd-root"
  safe_remove "$root"
  mv "$tmp_root" "$root"
fi
unmount_below "$root"  # left over from a killed run
install -m 755 scripts/install-deps.sh "$root/usr/local/sbin/anomalysd-install-deps"
mount --bind /proc "$root/proc"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /usr/local/sbin/anomalysd-install-deps < /dev/null ||
  { umount -l "$root/proc"; exit 1; }
umount -l "$root/proc"
stamp "root ready: $(chroot "$root" dpkg-query -W -f='libtorch-dev ${Version}' libtorch-dev), Debian $(cat "$root/etc/debian_version")"

if [ "${1:-}" = "--prepare" ]; then exit 0; fi

# 2. the work tree at /src and ../shared at /shared (read-only), as ../shared beside /src
mkdir -p "$root/src" "$root/shared" "$root/build"
mounts=()
cleanup() { for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done; }
trap cleanup EXIT
mount --bind /proc "$root/proc" && mounts+=("$root/proc")
mount --bind /dev "$root/dev" && mounts+=("$root/dev")
mount --bind "$tree" "$root/src" && mounts+=("$root/src")
if [ -d "$shared" ]; then
  mount --bind "$shared" "$root/shared" && mounts+=("$root/shared")
  mount -o remount,bind,ro "$root/shared" 2>/dev/null || true
fi
mount -t tmpfs tmpfs "$root/tmp" && mounts+=("$root/tmp")

# 3. build and run the whole suite there (the sanitizer job runs on Debian 12 only)
stamp "building and testing on LibTorch 2.6"
inside='set -euo pipefail
cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DANOMALYSD_FIXTURES_DIR=/shared/fixtures > /build/configure.log
cmake --build /build --parallel "$(nproc)"
/build/src/anomalysd --version
cd /build && ctest --output-on-failure --parallel "$(nproc)" "$@"'
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root CI="${CI:-}" LANG=C.UTF-8 \
  CCACHE_DIR=/root/.ccache /bin/bash -c "$inside" trixie-suite "$@" < /dev/null
stamp "done"
