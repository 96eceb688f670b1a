#!/usr/bin/env bash
# Make sure arm64 binaries run here through qemu-user (binfmt_misc).
# Exit 0 when they do; non-zero with the reason when they cannot.
set -euo pipefail

if [ "$(uname -m)" = aarch64 ]; then exit 0; fi
misc=/proc/sys/fs/binfmt_misc
if [ ! -e "$misc/register" ]; then
  mount -t binfmt_misc binfmt_misc "$misc" || {
    echo "binfmt.sh: cannot mount binfmt_misc on $misc (needs root and a kernel with binfmt_misc)" >&2
    exit 1
  }
fi
if [ ! -e "$misc/qemu-aarch64" ]; then
  command -v update-binfmts >/dev/null || {
    echo "binfmt.sh: update-binfmts missing: apt-get install binfmt-support qemu-user-static" >&2
    exit 1
  }
  update-binfmts --enable qemu-aarch64 || {
    echo "binfmt.sh: update-binfmts --enable qemu-aarch64 failed" >&2
    exit 1
  }
fi
# The F flag makes the kernel hold the interpreter open, so chroots need no copy of it.
grep -q '^flags: .*F' "$misc/qemu-aarch64" || {
  echo "binfmt.sh: qemu-aarch64 is registered without the F flag; chroots will not find it" >&2
  exit 1
}
