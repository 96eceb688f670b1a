#!/usr/bin/env bash
# Debootstrap a Debian 12 arm64 root laid out like Raspberry Pi OS Lite (bookworm):
# systemd, udev, Python 3.11, ALSA; no kernel (nspawn boots the host's).
#
#   tests/image/make_base_rootfs.sh DIR
#
# Runs under qemu-user (binfmt_misc); about 3-6 minutes.  DIR is written
# atomically (built in DIR.tmp, then renamed), so an interrupted run is redone.
set -euo pipefail

dest=${1:?usage: $0 DIR}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What Raspberry Pi OS Lite has and aesynth relies on.  sudo and openssh-server
# let the build's first-boot settings be exercised like on a real card.
include=systemd,systemd-sysv,udev,dbus,python3,libasound2,alsa-utils,kmod,sudo,openssh-server,fdisk,e2fsprogs,iproute2

[ -d "$dest" ] && { echo "$dest exists"; exit 0; }
here=$(cd "$(dirname "$0")" && pwd)
"$here/../../image/binfmt.sh"
tmp=$(mktemp -d "$dest.tmp.XXXXXX")  # unique: two runs never share a half-made tree
trap 'rm -rf "$tmp"' EXIT
debootstrap --arch=arm64 --variant=minbase --include="$include" bookworm "$tmp" "$mirror"
# Like Raspberry Pi OS: apt lists are not needed on the card.
rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/archives/*.deb
chmod 0755 "$tmp"
mv -T "$tmp" "$dest"
trap - EXIT
echo "base rootfs ready: $dest ($(du -sh "$dest" | cut -f1))"
