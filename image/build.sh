#!/usr/bin/env bash
# shellcheck disable=SC2015  # "test && test || die" is meant: die when either fails.
# Turn a stock Raspberry Pi OS Lite 64-bit image into an aesynth card image.
#
#   image/build.sh --base RPIOS.img[.xz] --output CARD.img [options]
#
# The card: the app in /opt/aesynth/venv (installed offline from a wheelhouse of
# aarch64 wheels, see wheelhouse.sh), aesynth.service started at boot, a
# read-only root, a data partition (/var/lib/aesynth: models, presets,
# recordings, state) grown to fill the card on first boot, I2C on, the sound
# card's ALSA config, USB sticks mounted read-only, the performance governor,
# and the first-boot settings below.  No account has a password.
#
# Needs root (loop devices and a chroot), qemu-user-static + binfmt-support on
# a non-arm64 machine, sfdisk, e2fsprogs, mtools; bmaptool is used when present.
set -euo pipefail

# --help: the usage on stdout, exit 0; a usage error: on stderr, exit 2.
usage() {
  local code=${1:-2}
  if [ "$code" -eq 0 ]; then usage_text; else usage_text >&2; fi
  exit "$code"
}
usage_text() {
  cat <<'EOF'
usage: image/build.sh --base IMAGE[.xz] --output CARD.img [options]
  --wheelhouse DIR        aarch64 wheels (made by image/wheelhouse.sh when incomplete)
                          default: cache/wheelhouse in this checkout
  --models DIR            bundles shipped on the card (default: models/)
  --hostname NAME         default: aesynth
  --user NAME             a login user (sudo, no password: log in with --ssh-key)
  --ssh-key FILE          public key for --user; enables sshd (keys only)
  --wifi-ssid SSID        Wi-Fi network (NetworkManager); the passphrase comes from
  --wifi-psk-file FILE    this file (never the command line)
  --wifi-country CC       regulatory domain, e.g. GB (needed for Wi-Fi)
  --audio-overlay NAME    a sound HAT's overlay, e.g. hifiberry-dacplusadc
  --audio-card ID         ALSA card id to play through (default: Headphones, the jack)
  --line-in               play the capture device (a HAT/USB input); else generate mode
  --display KIND          [display] kind: auto ssd1306 sh1106 none (default auto)
  --root-grow MIB         room added to the root for the app (default 1536)
  --data-size MIB         data partition size in the image (default 256; grown at boot)
EOF
}
die() { echo "build.sh: $*" >&2; exit 1; }

repo=$(cd "$(dirname "$0")/.." && pwd)
here="$repo/image"
base="" output="" wheelhouse="$repo/cache/wheelhouse" models="$repo/models"
hostname=aesynth user="" ssh_key="" wifi_ssid="" wifi_psk_file="" wifi_country=""
audio_overlay="" audio_card=Headphones line_in=0 display=auto root_grow=1536 data_size=256
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base=${2:?}; shift 2 ;;
    --output) output=${2:?}; shift 2 ;;
    --wheelhouse) wheelhouse=${2:?}; shift 2 ;;
    --models) models=${2:?}; shift 2 ;;
    --hostname) hostname=${2:?}; shift 2 ;;
    --user) user=${2:?}; shift 2 ;;
    --ssh-key) ssh_key=${2:?}; shift 2 ;;
    --wifi-ssid) wifi_ssid=${2:?}; shift 2 ;;
    --wifi-psk-file) wifi_psk_file=${2:?}; shift 2 ;;
    --wifi-country) wifi_country=${2:?}; shift 2 ;;
    --audio-overlay) audio_overlay=${2:?}; shift 2 ;;
    --audio-card) audio_card=${2:?}; shift 2 ;;
    --line-in) line_in=1; shift ;;
    --display) display=${2:?}; shift 2 ;;
    --root-grow) root_grow=${2:?}; shift 2 ;;
    --data-size) data_size=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "build.sh: unknown option '$1'" >&2; usage ;;
  esac
done

# -- check the options before touching anything ------------------------------------------------
[ -n "$base" ] && [ -n "$output" ] || usage
[ -f "$base" ] || die "--base: no such image file: $base"
[ "$(id -u)" -eq 0 ] || die "needs root (loop devices, mount, chroot); run with sudo"
[ -f "$models/default/manifest.json" ] || die "--models: $models has no default/manifest.json"
[[ "$hostname" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] \
  || die "--hostname must be 1-63 of a-z 0-9 - (not at the ends), got '$hostname'"
if [ -n "$user" ]; then
  [[ "$user" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "--user must match [a-z_][a-z0-9_-]{0,31}, got '$user'"
  [ "$user" != aesynth ] && [ "$user" != root ] || die "--user cannot be '$user' (reserved)"
fi
[ -z "$ssh_key" ] || [ -n "$user" ] || die "--ssh-key needs --user (root logins are refused)"
[ -z "$ssh_key" ] || grep -qE '^(ssh|ecdsa|sk)-' "$ssh_key" \
  || die "--ssh-key: $ssh_key is not an OpenSSH public key"
if [ -n "$wifi_ssid" ]; then
  [ -n "$wifi_psk_file" ] && [ -r "$wifi_psk_file" ] || die "--wifi-ssid needs a readable --wifi-psk-file"
  [[ "$wifi_country" =~ ^[A-Z]{2}$ ]] || die "--wifi-ssid needs --wifi-country, two capital letters (e.g. GB), got '$wifi_country'"
  psk=$(head -n1 "$wifi_psk_file")
  [ ${#psk} -ge 8 ] && [ ${#psk} -le 63 ] || die "--wifi-psk-file: a WPA passphrase has 8..63 characters, got ${#psk}"
fi
[[ "$audio_card" =~ ^[A-Za-z0-9_]{1,15}$ ]] || die "--audio-card must be an ALSA card id (1-15 of A-Z a-z 0-9 _), got '$audio_card'"
[ -z "$audio_overlay" ] || [[ "$audio_overlay" =~ ^[a-z0-9,=-]+$ ]] || die "--audio-overlay: bad overlay name '$audio_overlay'"
case "$display" in auto|ssd1306|sh1106|none) ;; *) die "--display must be auto, ssd1306, sh1106 or none, got '$display'" ;; esac
[[ "$root_grow" =~ ^[0-9]+$ ]] && [ "$root_grow" -ge 256 ] || die "--root-grow must be >= 256 (MiB), got '$root_grow'"
[[ "$data_size" =~ ^[0-9]+$ ]] && [ "$data_size" -ge 32 ] || die "--data-size must be >= 32 (MiB), got '$data_size'"
for tool in sfdisk losetup resize2fs e2fsck mkfs.ext4 mtype mcopy chroot systemctl ssh-keygen; do
  command -v "$tool" >/dev/null || die "missing tool: $tool (deploy/setup.sh dev installs them)"
done
"$here/binfmt.sh"
# Commands in the card's root see a clean environment, not this machine's pip/locale settings.
in_root() {
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LC_ALL=C.UTF-8 "$@"
}

# -- copy the base ------------------------------------------------------------------------------
tmp="$output.part"
work=$(mktemp -d /tmp/aesynth-build.XXXXXX)
root="$work/root"
loops=()
cleanup() {
  set +e
  for m in "$root/tmp/wh" "$root/dev" "$root/proc" "$root"; do
    mountpoint -q "$m" && umount "$m"
  done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
echo "build.sh: copying $base"
case "$base" in
  *.xz) xz -dc "$base" > "$tmp" ;;
  *) cp --sparse=always "$base" "$tmp" ;;
esac

# -- partitions: boot (FAT) 1, root (ext4) 2, then our data partition 3 --------------------------
read -r label nparts p1_start p2_start p2_size p1_type p2_type < <(sfdisk -J "$tmp" | python3 -c '
import json, sys
t = json.load(sys.stdin)["partitiontable"]; p = t["partitions"]
print(t["label"], len(p), p[0]["start"], p[1]["start"] if len(p) > 1 else 0,
      p[1]["size"] if len(p) > 1 else 0, p[0].get("type", "?"), p[1].get("type", "?") if len(p) > 1 else "?")')
[ "$label" = dos ] && [ "$nparts" -eq 2 ] && [ "$p2_type" = 83 ] \
  || die "$base is not laid out like Raspberry Pi OS (dos label, FAT boot + Linux root): label=$label partitions=$nparts root type=$p2_type"
case "$p1_type" in b|c|e) ;; *) die "$base: partition 1 is type $p1_type, not FAT" ;; esac
disk_id=$(sfdisk --disk-id "$tmp"); disk_id=${disk_id#0x}
align=8192  # sectors: 4 MiB, as Raspberry Pi OS aligns its partitions
p2_new=$(( (p2_start + p2_size + root_grow * 2048 + align - 1) / align * align - p2_start ))
p3_start=$(( p2_start + p2_new ))
p3_size=$(( data_size * 2048 ))
truncate -s $(( (p3_start + p3_size) * 512 )) "$tmp"
echo "$p2_start,$p2_new" | sfdisk -q --no-reread --no-tell-kernel -N 2 "$tmp"
echo "$p3_start,$p3_size,83" | sfdisk -q --no-reread --no-tell-kernel --append "$tmp"
boot_img="$tmp@@$(( p1_start * 512 ))"

echo "build.sh: growing the root by $root_grow MiB"
loop=$(losetup --find --show --offset $(( p2_start * 512 )) --sizelimit $(( p2_new * 512 )) "$tmp")
loops+=("$loop")
e2fsck -fy "$loop" >/dev/null || [ $? -eq 1 ] || die "e2fsck failed on the base root"
resize2fs -p "$loop" >/dev/null 2>&1 || die "resize2fs failed on the root"

mkdir -p "$root"
mount "$loop" "$root"
[ -x "$root/usr/bin/python3" ] || die "$base: the root has no /usr/bin/python3"

# -- the Python environment, offline ----------------------------------------------------------
"$here/wheelhouse.sh" --builder-root "$root" "$wheelhouse"
mkdir -p "$root/tmp/wh"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind -o ro "$wheelhouse" "$root/tmp/wh"
pipwhl=$(find "$wheelhouse" -maxdepth 1 -name 'pip-*.whl' -printf '%f\n' | head -n1)
echo "build.sh: installing aesynth into /opt/aesynth/venv (arm64, emulated: minutes)"
in_root python3 -m venv --without-pip /opt/aesynth/venv
in_root /opt/aesynth/venv/bin/python "/tmp/wh/$pipwhl/pip" install -q --no-index \
  --find-links /tmp/wh pip
in_root /opt/aesynth/venv/bin/python -m pip install -q --no-index --find-links /tmp/wh \
  -c /tmp/wh/constraints.txt "aesynth[device]" pyalsaaudio
in_root /opt/aesynth/venv/bin/python -c "import device.cli, alsaaudio, numpy, ai_edge_litert, lgpio, cysystemd.daemon" \
  || die "the installed app does not import on the card's Python"
umount "$root/tmp/wh"

# -- files: units, configs, models -------------------------------------------------------------
cp -r --preserve=mode "$here/rootfs/." "$root/"
mkdir -p "$root/opt/aesynth/models"
cp -r "$models/." "$root/opt/aesynth/models/"
cp "$repo/deploy/aesynth.toml" "$root/opt/aesynth/aesynth.toml"
cp "$repo/README.md" "$root/opt/aesynth/README.md"
if [ "$line_in" -eq 1 ]; then mode=resynth input=line; else mode=generate input=none; fi
sed -i -e "s/@MODE@/$mode/" -e "s/@INPUT@/$input/" -e "s/@DISPLAY@/$display/" \
  "$root/etc/aesynth/config.toml"
sed "s/@CARD@/$audio_card/g" "$here/asound.conf.in" > "$root/etc/asound.conf"

for g in audio i2c gpio plugdev; do
  in_root getent group "$g" >/dev/null || in_root groupadd --system "$g"
done
in_root getent passwd aesynth >/dev/null || in_root useradd --system --user-group \
  --home-dir /var/lib/aesynth --no-create-home --shell /usr/sbin/nologin aesynth
systemctl --root="$root" enable aesynth.service aesynth-governor.service \
  aesynth-growdata.service aesynth-poweroff.path aesynth-models.path >/dev/null 2>&1
# Raspberry Pi OS services that write to the root, ask for a user on first boot,
# resize the root (our data partition comes after it), or set the ondemand governor.
systemctl --root="$root" mask userconfig.service regenerate_ssh_host_keys.service \
  raspi-config.service resize2fs_once.service dphys-swapfile.service \
  apt-daily.timer apt-daily-upgrade.timer man-db.timer >/dev/null 2>&1

# -- read-only root --------------------------------------------------------------------------
cat > "$root/etc/fstab" <<EOF
# aesynth: the root and the boot partition are read-only; what changes lives on
# the data partition or in RAM.  To change the root: sudo mount -o remount,rw /
PARTUUID=$disk_id-01  /boot/firmware    vfat   ro,defaults                           0 2
PARTUUID=$disk_id-02  /                 ext4   ro,noatime                            0 1
PARTUUID=$disk_id-03  /var/lib/aesynth  ext4   defaults,noatime,nosuid,nodev,noexec  0 2
tmpfs  /tmp          tmpfs  nosuid,nodev,mode=1777,size=64M          0 0
tmpfs  /var/tmp      tmpfs  nosuid,nodev,mode=1777,size=16M          0 0
tmpfs  /var/log      tmpfs  nosuid,nodev,noexec,mode=0755,size=16M   0 0
tmpfs  /var/lib/sudo tmpfs  nosuid,nodev,noexec,mode=0700,size=1M    0 0
tmpfs  /media        tmpfs  nosuid,nodev,noexec,mode=0755,size=1M    0 0
EOF
# Mount points must exist before boot: nothing can make them on a read-only root.
install -d -m 0750 "$root/var/lib/aesynth"
install -d -m 0755 "$root/media"
if [ -d "$root/var/lib/NetworkManager" ]; then
  echo "tmpfs  /var/lib/NetworkManager  tmpfs  nosuid,nodev,noexec,mode=0700,size=4M  0 0" >> "$root/etc/fstab"
  ln -sf /run/NetworkManager/resolv.conf "$root/etc/resolv.conf"
fi
# An empty machine-id: systemd makes a transient one at each boot on a read-only root.
: > "$root/etc/machine-id"

# -- first-boot settings ---------------------------------------------------------------------
echo "$hostname" > "$root/etc/hostname"
sed -i '/^127\.0\.1\.1/d' "$root/etc/hosts"
printf '127.0.1.1\t%s\n' "$hostname" >> "$root/etc/hosts"
if [ -n "$user" ]; then
  in_root getent passwd "$user" >/dev/null || in_root useradd --create-home \
    --shell /bin/bash --groups sudo,audio,i2c,gpio,plugdev "$user"
  # '*': no password can ever match; keys still log in.
  in_root usermod -p '*' "$user"
  echo "$user ALL=(ALL) NOPASSWD: ALL" > "$root/etc/sudoers.d/010_aesynth-$user"
  chmod 0440 "$root/etc/sudoers.d/010_aesynth-$user"
fi
if [ -d "$root/etc/ssh" ]; then
  rm -f "$root"/etc/ssh/ssh_host_*
  if [ -n "$ssh_key" ]; then
    home=$(in_root getent passwd "$user" | cut -d: -f6)
    install -d -m 0700 "$root$home/.ssh"
    install -m 0600 "$ssh_key" "$root$home/.ssh/authorized_keys"
    in_root chown -R "$user:$user" "$home/.ssh"
    install -m 0644 "$here/optional/sshd-aesynth.conf" "$root/etc/ssh/sshd_config.d/aesynth.conf"
    # Host keys now: a read-only root could not keep keys made at boot.
    ssh-keygen -q -A -f "$root"
    systemctl --root="$root" enable ssh.service >/dev/null 2>&1
  else
    systemctl --root="$root" disable ssh.service >/dev/null 2>&1 || true
  fi
fi
if [ -n "$wifi_ssid" ]; then
  conn="$root/etc/NetworkManager/system-connections/aesynth-wifi.nmconnection"
  mkdir -p "$(dirname "$conn")"
  umask 077
  cat > "$conn" <<EOF
[connection]
id=aesynth-wifi
type=wifi
autoconnect=true

[wifi]
mode=infrastructure
ssid=$wifi_ssid

[wifi-security]
key-mgmt=wpa-psk
psk=$psk

[ipv4]
method=auto

[ipv6]
method=auto
EOF
  umask 022
  chmod 0600 "$conn"
fi

# -- the boot partition (FAT: mtools, the kernel here has no vfat) ----------------------------
mtype -i "$boot_img" ::cmdline.txt > "$work/cmdline.txt" || die "$base: no cmdline.txt in the boot partition"
mtype -i "$boot_img" ::config.txt > "$work/config.txt" || die "$base: no config.txt in the boot partition"
# One line; a read-only root; no Raspberry Pi OS first-boot resize (init=...firstboot).
cmdline=$(tr -d '\r\n' < "$work/cmdline.txt" | sed -E -e 's#(^| )init=[^ ]*##g' \
  -e 's#(^| )rw( |$)#\1ro\2#' -e 's#  +# #g')
case " $cmdline " in *" ro "*) ;; *) cmdline="$cmdline ro" ;; esac
[ -z "$wifi_country" ] || cmdline="$cmdline cfg80211.ieee80211_regdom=$wifi_country"
echo "$cmdline" > "$work/cmdline.txt"
sed -i '/^# --- aesynth/,$d' "$work/config.txt"
if [ -n "$audio_overlay" ]; then
  sed -e 's/^dtparam=audio=on$/dtparam=audio=off/' "$here/config.txt" >> "$work/config.txt"
  echo "dtoverlay=$audio_overlay" >> "$work/config.txt"
  sed -i 's/^dtparam=audio=on$/dtparam=audio=off/' "$work/config.txt"
else
  cat "$here/config.txt" >> "$work/config.txt"
fi
mcopy -o -i "$boot_img" "$work/cmdline.txt" ::cmdline.txt
mcopy -o -i "$boot_img" "$work/config.txt" ::config.txt

# -- the data partition: owned by aesynth from the start (no tmpfiles needed to write it) -------
ids=$(in_root getent passwd aesynth | cut -d: -f3,4)
mkdir -p "$work/data"/{models,presets,recordings,state}
chown -R "$ids" "$work/data"
chmod -R 0750 "$work/data"
# Made apart and copied in: mke2fs will not write into an image whose root is mounted.
mkfs.ext4 -q -F -L aesynth-data -d "$work/data" -E "root_owner=$ids" "$work/data.img" \
  "$(( p3_size / 2 ))k" || die "mkfs.ext4 failed on the data partition"
dd if="$work/data.img" of="$tmp" bs=1M seek=$(( p3_start / 2048 )) conv=notrunc,sparse status=none

# -- finish ------------------------------------------------------------------------------------
umount "$root/dev" "$root/proc"
umount "$root"
e2fsck -fn "$loop" >/dev/null || die "e2fsck found errors on the built root"
cleanup
trap - EXIT
if command -v bmaptool >/dev/null; then
  bmaptool -q create -o "$output.bmap.part" "$tmp"
  mv "$output.bmap.part" "$output.bmap"
fi
mv "$tmp" "$output"
echo "build.sh: card image ready: $output ($(du -h --apparent-size "$output" | cut -f1))"
