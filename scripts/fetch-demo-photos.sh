#!/usr/bin/env bash
# Real photographs for the demo's bootstrap (never the benchmark's images): CC0 texture photos that
# Debian packages ship, unpacked from the packages with `apt-get download` (nothing is installed,
# no root needed). Writes models/demo/photos/*.png and SOURCES.txt; a no-op when they are there.
#
#   python3-skimage        skimage/data/{brick,grass,gravel}.png   CC0 (cc0textures.com, scikit-image's data)
#   mypaint-data-extras    backgrounds/ramon/*.png, mrmamurk/*.png CC0 (scans of paper, canvas, cork)
#
#   scripts/fetch-demo-photos.sh [DIR]     # default models/demo/photos
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-models/demo/photos}"
if [ -f "$out/SOURCES.txt" ]; then exit 0; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download python3-skimage mypaint-data-extras >/dev/null 2>&1) || {
  echo "fetch-demo-photos: apt-get download python3-skimage mypaint-data-extras failed (no apt source?)" >&2
  exit 1
}
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
mkdir -p "$out.tmp"
sources="$out.tmp/SOURCES.txt"
echo "Real photographs for the demo's bootstrap, from Debian packages (all CC0-1.0):" > "$sources"
for name in brick grass gravel; do
  cp "$work/root/usr/lib/python3/dist-packages/skimage/data/$name.png" "$out.tmp/skimage-$name.png"
  echo "skimage-$name.png  python3-skimage skimage/data/$name.png  CC0-1.0 (cc0textures.com via scikit-image)" >> "$sources"
done
for f in "$work"/root/usr/share/mypaint/backgrounds/ramon/*.png "$work"/root/usr/share/mypaint/backgrounds/mrmamurk/*.png; do
  base="$(basename "$f" .png | tr ' ' '_' | tr 'A-Z' 'a-z')"
  author="$(basename "$(dirname "$f")")"
  cp "$f" "$out.tmp/mypaint-$author-$base.png"
  echo "mypaint-$author-$base.png  mypaint-data-extras backgrounds/$author/$(basename "$f")  CC0-1.0 (scans by $author)" >> "$sources"
done
rm -rf "$out"
mv "$out.tmp" "$out"
echo "fetch-demo-photos: $(ls "$out"/*.png | wc -l) photographs in $out"
