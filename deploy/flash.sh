#!/usr/bin/env bash
# Build the aesynth card image and write it to an SD card, safely.
#
# usage:
#   deploy/flash.sh --base RPIOS.img[.xz] --device /dev/sdX [--yes] [build options]
#   deploy/flash.sh --base RPIOS.img[.xz] --output CARD.img [build options]   (build only)
#   deploy/flash.sh --image CARD.img --device /dev/sdX                          (reuse a build)
#   deploy/flash.sh --ssh USER@HOST [--config FILE.toml]                        (update a box)
#
# Writing refuses: anything but a whole block device, the disk the running
# system lives on, any disk with a mounted (or swap, or held) partition, and
# any disk the kernel does not call removable (an SD card in a built-in
# reader, type SD, counts as removable).  It asks before writing unless --yes,
# writes with bmaptool when present (else dd conv=fsync), then reads the card
# back and compares checksums.
#
# Build options are passed to image/build.sh (see image/build.sh --help).
# For tests: AESYNTH_SYSFS (default /sys) and AESYNTH_MOUNTS (default
# /proc/self/mounts) point at a fake sysfs and mount table.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
sysfs=${AESYNTH_SYSFS:-/sys}
mounts=${AESYNTH_MOUNTS:-/proc/self/mounts}
swaps=${AESYNTH_SWAPS:-/proc/swaps}

# The comment block above (to its first non-comment line): on stdout and exit 0 for --help,
# on stderr and exit 2 after a usage error.
usage() {
  local code=${1:-2}
  if [ "$code" -eq 0 ]; then help_text; else help_text >&2; fi
  exit "$code"
}
help_text() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
die() { echo "flash.sh: $*" >&2; exit 1; }
refuse() { echo "flash.sh: refusing to write $device: $*" >&2; exit 3; }

base="" device="" output="" image="" ssh_target="" config="" yes=0
build_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base=${2:?--base needs a file}; shift 2 ;;
    --device) device=${2:?--device needs a path}; shift 2 ;;
    --output) output=${2:?--output needs a file}; shift 2 ;;
    --image) image=${2:?--image needs a file}; shift 2 ;;
    --ssh) ssh_target=${2:?--ssh needs USER@HOST}; shift 2 ;;
    --config) config=${2:?--config needs a file}; shift 2 ;;
    --yes|-y) yes=1; shift ;;
    -h|--help) usage 0 ;;
    --line-in) build_args+=("$1"); shift ;;
    --wheelhouse|--models|--hostname|--user|--ssh-key|--wifi-ssid|--wifi-psk-file|--wifi-country|\
    --audio-overlay|--audio-card|--display|--root-grow|--data-size)
      build_args+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    *) echo "flash.sh: unknown option '$1'" >&2; usage ;;
  esac
done

# -- the target disk ---------------------------------------------------------------------------
# The whole disk holding the mounted block device $1 (a partition, a dm/md
# device or a disk), by walking sysfs; prints nothing for non-block sources.
disk_of() {
  local src=$1 name
  src=$(readlink -f "$src" 2>/dev/null) || return 0
  [ -b "$src" ] || [ -e "$sysfs/class/block/${src##*/}" ] || return 0
  name=${src##*/}
  if [ -e "$sysfs/class/block/$name/partition" ]; then
    name=$(basename "$(dirname "$(readlink -f "$sysfs/class/block/$name")")")
  fi
  # A device-mapper or md device: the disks under it.
  if [ -d "$sysfs/block/$name/slaves" ] && [ -n "$(ls -A "$sysfs/block/$name/slaves" 2>/dev/null)" ]; then
    local s
    for s in "$sysfs/block/$name/slaves"/*; do disk_of "/dev/${s##*/}"; done
  else
    echo "$name"
  fi
}

# Every block device name under disk $1: the disk and its partitions.
names_of() {
  local d=$1 p
  echo "$d"
  for p in "$sysfs/block/$d"/"$d"*; do
    [ -e "$p/partition" ] && echo "${p##*/}"
  done
  return 0
}

check_target() {
  [ -e "$device" ] || refuse "no such device"
  local real name
  real=$(readlink -f "$device")
  [ -b "$real" ] || refuse "not a block device ($real)"
  name=${real##*/}
  [ -d "$sysfs/block/$name" ] || refuse "$name is not a whole disk (a partition?) in $sysfs/block; give the disk, e.g. /dev/sdX"

  # The system disk: whatever holds / (and /boot, /usr, /var) right now.
  local m src d
  for m in / /boot /boot/firmware /usr /var /home; do
    src=$(awk -v m="$m" '$2 == m { s = $1 } END { print s }' "$mounts")
    [ -n "$src" ] || continue
    for d in $(disk_of "$src"); do
      [ "$d" = "$name" ] && refuse "it is the system disk (it holds $m)"
    done
  done

  # Mounted anywhere, used as swap, or held by device-mapper/md/LVM.
  local n names
  names=" $(names_of "$name" | tr '\n' ' ')"
  while read -r src m _; do
    n=$(readlink -f "$src" 2>/dev/null) || continue
    case "$names" in *" ${n#/dev/} "*) refuse "$n is mounted on $m (unmount it first)" ;; esac
    for d in $(disk_of "$src"); do
      [ "$d" = "$name" ] && refuse "it is in use by $src, mounted on $m (unmount it first)"
    done
  done < "$mounts"
  for n in $names; do
    if [ -r "$swaps" ] && awk 'NR > 1 { print $1 }' "$swaps" | grep -qx "/dev/$n"; then
      refuse "/dev/$n is in use as swap"
    fi
    local dir=$sysfs/block/$name/$n holders
    [ "$n" = "$name" ] && dir=$sysfs/block/$name
    holders=$(find "$dir/holders/" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null || true)
    [ -z "$holders" ] || refuse "/dev/$n is held by $holders(LVM, RAID or dm)"
  done

  # Removable media only.  A built-in SD reader reports removable=0 but the
  # card reports type SD (eMMC soldered on a board says MMC).
  local removable mmc_type=""
  removable=$(cat "$sysfs/block/$name/removable" 2>/dev/null || echo 0)
  [ -r "$sysfs/block/$name/device/type" ] && mmc_type=$(cat "$sysfs/block/$name/device/type")
  if [ "$removable" != 1 ] && [ "$mmc_type" != SD ]; then
    refuse "the kernel says it is not removable ($sysfs/block/$name/removable = $removable); aesynth writes only to SD cards and USB card readers"
  fi
  target=$real
  target_name=$name
}

describe() {
  local sectors model="" vendor=""
  sectors=$(cat "$sysfs/block/$target_name/size" 2>/dev/null || echo 0)
  vendor=$(cat "$sysfs/block/$target_name/device/vendor" 2>/dev/null || true)
  model=$(cat "$sysfs/block/$target_name/device/model" 2>/dev/null || true)
  echo "$target ($(( sectors / 2048 )) MiB) ${vendor//  /}${model:+ $model}"
}

# -- writing and checking ------------------------------------------------------------------
sha_range() {  # FILE BLOCK_SIZE FIRST_BLOCK COUNT: sha256 of that range, read past the page cache
  local flags=""
  [ -b "$1" ] && flags="iflag=direct"
  # shellcheck disable=SC2086  # flags is empty or one word
  dd if="$1" bs="$2" skip="$3" count="$4" $flags status=none | sha256sum | cut -d' ' -f1
}

write_and_verify() {
  local img=$1 bmap="$1.bmap" size
  size=$(stat -c %s "$img")
  if command -v bmaptool >/dev/null && [ -f "$bmap" ]; then
    echo "flash.sh: writing with bmaptool"
    bmaptool copy --bmap "$bmap" "$img" "$target"
    # Read back every mapped range and compare with the bmap's checksums
    # (unmapped ranges were never written, so a whole-card hash means nothing).
    local bs ranges=0 bad=0 sum first last want
    bs=$(sed -n 's:.*<BlockSize> *\([0-9]*\) *</BlockSize>.*:\1:p' "$bmap")
    while read -r sum first last; do
      want=$(sha_range "$target" "$bs" "$first" $(( last - first + 1 )))
      ranges=$((ranges + 1))
      [ "$want" = "$sum" ] || { bad=$((bad + 1)); echo "flash.sh: blocks $first-$last differ" >&2; }
    done < <(sed -n 's:.*<Range chksum="\([0-9a-f]*\)"> *\([0-9]*\)-\{0,1\}\([0-9]*\) *</Range>.*:\1 \2 \3:p' "$bmap" \
             | awk '{ if ($3 == "") $3 = $2; print }')
    [ "$ranges" -gt 0 ] || die "no ranges found in $bmap"
    [ "$bad" -eq 0 ] || die "verify failed: $bad of $ranges ranges differ on $target"
    echo "flash.sh: verified $ranges ranges against $bmap"
  else
    echo "flash.sh: writing with dd"
    dd if="$img" of="$target" bs=4M conv=fsync status=progress
    sync
    local want got
    want=$(sha256sum "$img" | cut -d' ' -f1)
    got=$(head -c "$size" "$target" | sha256sum | cut -d' ' -f1)
    if [ -b "$target" ]; then  # past the page cache: what the card really holds
      blockdev --flushbufs "$target" 2>/dev/null || true
      got=$(dd if="$target" bs=1M iflag=direct,count_bytes count="$size" status=none | sha256sum | cut -d' ' -f1)
    fi
    [ "$want" = "$got" ] || die "verify failed: $target reads back $got, the image is $want"
    echo "flash.sh: verified sha256 $want"
  fi
}

# -- --ssh: update a running box ------------------------------------------------------------
update_box() {
  [[ "$ssh_target" =~ ^[A-Za-z0-9._-]+@[A-Za-z0-9.:_-]+$ ]] || die "--ssh wants USER@HOST, got '$ssh_target'"
  [ -z "$config" ] || [ -f "$config" ] || die "--config: no such file: $config"
  local stage
  stage=$(mktemp -d /tmp/aesynth-flash.XXXXXX)
  trap 'rm -rf "$stage"' EXIT
  "$repo/.venv/bin/python" -m pip wheel -q --no-deps -w "$stage" "$repo" >/dev/null
  cp -r "$repo/models" "$stage/models"
  [ -z "$config" ] || cp "$config" "$stage/config.toml"
  local remote=/tmp/aesynth-update
  ${SSH:-ssh} "$ssh_target" "rm -rf $remote && mkdir -p $remote"
  ${SCP:-scp} -q -r "$stage/." "$ssh_target:$remote/"
  # The root is read-only: open it, install, close it again even on failure.
  # shellcheck disable=SC2087  # expanded here on purpose: the paths are ours
  ${SSH:-ssh} "$ssh_target" sudo sh -eu <<EOF
mount -o remount,rw /
trap 'sync; mount -o remount,ro / || echo "root left read-write: reboot" >&2' EXIT
/opt/aesynth/venv/bin/python -m pip install -q --no-deps --force-reinstall $remote/aesynth-*.whl
rm -rf /opt/aesynth/models.new && cp -r $remote/models /opt/aesynth/models.new
rm -rf /opt/aesynth/models.old && mv /opt/aesynth/models /opt/aesynth/models.old
mv /opt/aesynth/models.new /opt/aesynth/models && rm -rf /opt/aesynth/models.old
if [ -f $remote/config.toml ]; then install -m 0644 $remote/config.toml /etc/aesynth/config.toml; fi
rm -rf $remote
systemctl restart aesynth.service
systemctl is-active aesynth.service
EOF
  echo "flash.sh: $ssh_target updated and aesynth restarted"
}

# -- main ------------------------------------------------------------------------------------------
if [ -n "$ssh_target" ]; then
  [ -z "$device$output$base$image" ] || die "--ssh updates a running box: no --device, --output, --base or --image"
  update_box
  exit 0
fi
[ -n "$device" ] || [ -n "$output" ] || die "say where: --device /dev/sdX (write a card) or --output FILE (build only)"
[ -z "$device" ] || [ -z "$output" ] || die "--device and --output are exclusive"
[ -n "$base" ] || [ -n "$image" ] || die "--base IMAGE (Raspberry Pi OS Lite 64-bit .img or .img.xz) or --image CARD.img is needed"
[ -z "$base" ] || [ -z "$image" ] || die "--base and --image are exclusive"

# Check the disk before a build of several minutes, and again right before writing.
[ -z "$device" ] || check_target

if [ -n "$base" ]; then
  card=${output:-$repo/cache/aesynth-card.img}
  mkdir -p "$(dirname "$card")"
  "$repo/image/build.sh" --base "$base" --output "$card" "${build_args[@]}"
  [ -n "$device" ] || exit 0
else
  [ ${#build_args[@]} -eq 0 ] || die "build options need --base (--image is written as it is)"
  card=$image
  [ -f "$card" ] || die "--image: no such file: $card"
fi

check_target
echo "flash.sh: about to ERASE $(describe)"
echo "          and write $card ($(du -h --apparent-size "$card" | cut -f1))"
if [ "$yes" -ne 1 ]; then
  printf 'Type "yes" to write: ' >&2
  read -r answer || answer=""
  [ "$answer" = yes ] || die "not written (answer was '${answer}')"
fi
write_and_verify "$card"
echo "flash.sh: done: $target holds the aesynth card; eject it and boot the Pi"
