#!/usr/bin/env bash
# Set up aesynth on a fresh Debian 12 / Raspberry Pi OS (bookworm) machine.
#
#   deploy/setup.sh play    system packages + .venv with the instrument
#   deploy/setup.sh dev     the above + training (TensorFlow) + test tools
#
# Idempotent: run it again after a pull.  Uses sudo for apt when not root.
set -euo pipefail

usage_text() {
  echo "usage: deploy/setup.sh [play|dev]"
  echo "  play  system packages + .venv with the instrument (the default)"
  echo "  dev   the above + training (TensorFlow) + test tools"
}
role=${1:-play}
case "$role" in
  play|dev) ;;
  -h|--help) usage_text; exit 0 ;;
  *) echo "setup.sh: unknown role or option '$role'" >&2; usage_text >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# System packages, by what needs them.
apt_play=(
  python3 python3-venv python3-dev gcc     # venv; pyalsaaudio builds from source
  libasound2-dev alsa-utils libasound2-plugins  # ALSA headers, aplay, the file/jack plugins
  libjack-jackd2-0                          # python-rtmidi links it
)
apt_dev=(
  jackd2                                    # paced audio + MIDI tests (dummy driver)
  fluidsynth timgm6mb-soundfont             # rendering MIDI songs for training data
  pushover-data                             # real music for tests (GPL-3+, 31 MB)
  xfonts-base                               # the 5x7 font the OLED font is made from
  shellcheck mtools dosfstools e2fsprogs fdisk  # image tests
  exfat-fuse exfatprogs                     # a FAT-family USB stick for aesynth-train new --stick
                                            # tests (the kernel here has no vfat; FUSE works)
  qemu-user-static binfmt-support debootstrap systemd-container  # arm64 card root: build + nspawn boot
  bmap-tools xz-utils openssh-client        # flash.sh writes, .img.xz bases, ssh-keygen for the card
)
pkgs=("${apt_play[@]}")
[ "$role" = dev ] && pkgs+=("${apt_dev[@]}")

sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  $sudo apt-get update -q
  # jackd2 asks about realtime priority; the answer does not matter here.
  echo "jackd2 jackd/tweak_rt_limits boolean false" | $sudo debconf-set-selections 2>/dev/null || true
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
fi

py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras=device
[ "$role" = dev ] && extras="device,train,dev"
.venv/bin/python -m pip install -q -e ".[${extras}]"
echo "aesynth set up for '$role' in $here/.venv"
