#!/usr/bin/env bash
# Installs everything anomalysd needs from Debian's apt: Debian 12 "bookworm" (LibTorch 1.13) and
# Debian 13 "trixie" (LibTorch 2.6) have every package below under the same name (checked on
# both). Idempotent: packages already present are not fetched again. Runs as root, or through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  # libgloo-dev: the headers of Gloo, the CPU backend of LibTorch's c10d (multi-process finetune/eval)
  libtorch-dev libgloo-dev libopencv-dev libcli11-dev libspdlog-dev nlohmann-json3-dev libyaml-cpp-dev libgtest-dev
  # Debian's LibTorch calls whatever libblas.so.3 is selected; the reference BLAS makes
  # matmul ~30x slower, so an optimised one is part of the set-up, not an option.
  libopenblas0-openmp
  # Tests only: runs scripts/convert_torchvision_weights.py on random torchvision models.
  python3-torchvision
  # Tests only: the sanitizer job and the fuzz targets (scripts/sanitize.sh, scripts/fuzz.sh).
  clang libclang-rt-dev
  # Tests only: /usr/bin/time, the fuzz job's peak memory of its largest image
  time
  # Real photographs (configs/photos.yaml names each file, its licence and its use): scikit-image's
  # and MyPaint's train the bootstrap; GIMP's patterns are held out for the real-photograph benchmark.
  python3-skimage mypaint-data-extras gimp-data
)

if [ -r /etc/os-release ]; then
  . /etc/os-release
  case "${ID:-}:${VERSION_ID:-}" in
    debian:12 | debian:13) ;;
    *) echo "install-deps: tested on Debian 12 and 13; this is ${PRETTY_NAME:-unknown}: trying the same package names" >&2 ;;
  esac
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi

# Select OpenBLAS as libblas.so.3 even if another BLAS was installed first.
arch_dir=/usr/lib/x86_64-linux-gnu
[ -d "$arch_dir" ] || arch_dir=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo aarch64-linux-gnu)
openblas=$(ls "$arch_dir"/openblas-openmp/libblas.so.3 2>/dev/null || true)
if [ -n "$openblas" ]; then
  "${sudo_cmd[@]}" update-alternatives --set "libblas.so.3-$(basename "$arch_dir")" "$openblas" >/dev/null 2>&1 || true
  lapack=$(ls "$arch_dir"/openblas-openmp/liblapack.so.3 2>/dev/null || true)
  [ -n "$lapack" ] && { "${sudo_cmd[@]}" update-alternatives --set "liblapack.so.3-$(basename "$arch_dir")" "$lapack" >/dev/null 2>&1 || true; }
fi
echo "install-deps: libblas.so.3 -> $(readlink -f "$arch_dir"/libblas.so.3 2>/dev/null || echo '?')"
