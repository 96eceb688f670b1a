#!/usr/bin/env bash
# A synthetic base image laid out like Raspberry Pi OS Lite 64-bit: dos label,
# FAT32 boot (config.txt, cmdline.txt with init=.../firstboot) at 4 MiB, ext4
# root with PARTUUID fstab.  No root rights or loop devices needed.
#
#   tests/image/make_base_image.sh ROOTFS_DIR OUT.img
set -euo pipefail

rootfs=${1:?usage: $0 ROOTFS_DIR OUT.img}
out=${2:?usage: $0 ROOTFS_DIR OUT.img}
disk_id=5eed1234
boot_start=8192                   # sectors (4 MiB), as Raspberry Pi OS
boot_size=$(( 128 * 2048 ))       # 128 MiB: FAT32 wants >= 65525 clusters
root_start=$(( boot_start + boot_size ))
used_mib=$(du -sm --apparent-size "$rootfs" | cut -f1)
root_size=$(( (used_mib * 5 / 4 + 64) * 2048 ))
work=$(mktemp -d /tmp/aesynth-base.XXXXXX)
trap 'rm -rf "$work"' EXIT

rm -f "$out"
truncate -s $(( (root_start + root_size) * 512 )) "$out"
sfdisk -q "$out" <<SFD
label: dos
label-id: 0x$disk_id
start=$boot_start, size=$boot_size, type=c
start=$root_start, size=$root_size, type=83
SFD

# The root: the debootstrap tree plus what Raspberry Pi OS puts in /etc.
cp -a "$rootfs" "$work/root"
mkdir -p "$work/root/boot/firmware"
cat > "$work/root/etc/fstab" <<FSTAB
proc            /proc           proc    defaults          0       0
PARTUUID=$disk_id-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$disk_id-02  /               ext4    defaults,noatime  0       1
FSTAB
echo raspberrypi > "$work/root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n' > "$work/root/etc/hosts"
mkfs.ext4 -q -F -L rootfs -E "offset=$(( root_start * 512 )),root_owner=0:0" -d "$work/root" \
  "$out" "$(( root_size / 2 ))k"

mkfs.vfat -F 32 -s 1 -n BOOTFS --offset "$boot_start" "$out" $(( boot_size / 2 )) >/dev/null 2>&1
cat > "$work/config.txt" <<'CFG'
# For more options and information see http://rptl.io/configtxt
#dtparam=i2c_arm=on
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
disable_fw_kms_setup=1
arm_64bit=1
disable_overscan=1
arm_boost=1

[all]
CFG
echo "console=serial0,115200 console=tty1 root=PARTUUID=$disk_id-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot" \
  > "$work/cmdline.txt"
mcopy -i "$out@@$(( boot_start * 512 ))" "$work/config.txt" "$work/cmdline.txt" ::
e2fsck -fn "$out?offset=$(( root_start * 512 ))" >/dev/null 2>&1 || true
echo "synthetic base image: $out"
