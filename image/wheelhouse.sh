#!/usr/bin/env bash
# Prepare the card's Python packages on the desktop, for offline install:
#   image/wheelhouse.sh --builder-root ARM64_ROOT DIR
#
# - aarch64 / CPython 3.11 wheels from PyPI for aesynth[device] (pip download);
# - aesynth itself as a wheel (from this checkout);
# - pyalsaaudio, which has no wheels: its sdist is built into an aarch64 wheel in
#   a throw-away copy of ARM64_ROOT (the card's own root, so it links what the
#   card has), with gcc and the headers installed there by apt under qemu-user.
# Reuses what DIR already holds: delete DIR to start again.
set -euo pipefail

# --help: the usage on stdout, exit 0; a usage error: on stderr, exit 2.
usage() {
  local code=${1:-2} text="usage: image/wheelhouse.sh --builder-root ARM64_ROOT DIR
  aarch64 CPython 3.11 wheels for aesynth[device] (and pyalsaaudio, built in a copy of
  ARM64_ROOT) into DIR, for image/build.sh to install offline"
  if [ "$code" -eq 0 ]; then echo "$text"; else echo "$text" >&2; fi
  exit "$code"
}
builder_root=""
dest=""
while [ $# -gt 0 ]; do
  case "$1" in
    --builder-root) builder_root=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    -*) echo "wheelhouse.sh: unknown option $1" >&2; usage ;;
    *) dest=$1; shift ;;
  esac
done
[ -n "$dest" ] || usage
repo=$(cd "$(dirname "$0")/.." && pwd)
here="$repo/image"
pip="${PIP:-$repo/.venv/bin/python -m pip}"
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

# Raspberry Pi OS bookworm: glibc 2.36, Python 3.11, aarch64.
platforms=()
for p in manylinux2014 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 \
         manylinux_2_34 manylinux_2_35 manylinux_2_36; do
  platforms+=(--platform "${p}_aarch64")
done

# Download again when the requirements or the card's pins change.
stamp=$(cat "$repo/pyproject.toml" "$here/constraints.txt" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$dest/.downloaded" 2>/dev/null)" != "$stamp" ]; then
  # The device extra, read from pyproject.toml (one list to keep up to date).
  mapfile -t reqs < <("$repo/.venv/bin/python" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]
for r in deps["dependencies"] + deps["optional-dependencies"]["device"]:
    if not r.startswith("pyalsaaudio"):  # no wheels: built below
        print(r)
PY
)
  $pip download -q "${platforms[@]}" --only-binary=:all: --python-version 3.11 \
    --implementation cp -c "$here/constraints.txt" -d "$dest" "${reqs[@]}" pip setuptools wheel
  $pip download -q --no-binary=:all: --no-deps -d "$dest" "pyalsaaudio>=0.11"
  cp "$here/constraints.txt" "$dest/constraints.txt"
  echo "$stamp" > "$dest/.downloaded"
fi

# aesynth itself: always rebuilt, it is what changes.
rm -f "$dest"/aesynth-*.whl
$pip wheel -q --no-deps -w "$dest" "$repo" >/dev/null

if [ -z "$(find "$dest" -maxdepth 1 -name "pyalsaaudio-*aarch64.whl")" ]; then
  [ -n "$builder_root" ] || { echo "wheelhouse.sh: pyalsaaudio needs --builder-root" >&2; exit 2; }
  "$here/binfmt.sh"
  b=$(mktemp -d /tmp/aesynth-builder.XXXXXX)
  cleanup() {
    for m in "$b/wh" "$b/dev" "$b/proc"; do mountpoint -q "$m" && umount -l "$m"; done
    rm -rf "$b"
  }
  trap cleanup EXIT
  echo "wheelhouse.sh: building pyalsaaudio in an arm64 chroot (copy of $builder_root)"
  cp -ax "$builder_root/." "$b/"  # -x: not the /proc or /dev a caller may have mounted there
  mkdir -p "$b/wh"
  mount --bind "$dest" "$b/wh"
  mount -t proc proc "$b/proc"
  mount --bind /dev "$b/dev"
  rm -f "$b/etc/resolv.conf"
  cp /etc/resolv.conf "$b/etc/resolv.conf"
  chroot "$b" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    DEBIAN_FRONTEND=noninteractive sh -c \
    'apt-get update -q && apt-get install -y -q --no-install-recommends gcc libc6-dev python3-dev libasound2-dev' \
    >"$dest/.builder-apt.log" 2>&1 || { tail -20 "$dest/.builder-apt.log" >&2; exit 1; }
  pipwhl=$(find "$dest" -maxdepth 1 -name "pip-*.whl" -printf "%f\n" | head -n1)
  sdist=$(find "$dest" -maxdepth 1 -name "pyalsaaudio-*.tar.gz" -printf "%f\n" | head -n1)
  chroot "$b" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    python3 "/wh/$pipwhl/pip" wheel -q --no-index --find-links /wh \
    --no-deps -w /wh "/wh/$sdist"
  cleanup
  trap - EXIT
fi
[ -n "$(find "$dest" -maxdepth 1 -name "pyalsaaudio-*aarch64.whl")" ] || {
  echo "wheelhouse.sh: no pyalsaaudio aarch64 wheel in $dest" >&2; exit 1; }
echo "wheelhouse ready: $dest ($(du -sh "$dest" | cut -f1))"
