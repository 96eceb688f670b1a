"""The card image: built from a synthetic Raspberry Pi OS base, then booted in nspawn.

The base is a Debian 12 arm64 debootstrap (cached in cache/image/ between runs;
a fresh machine makes it in about 5 minutes) in a FAT32 + ext4 image laid out
like Raspberry Pi OS Lite.  The session builds the card from it once with
image/build.sh (the wheelhouse is cached too; the app wheel is rebuilt every
time), then these tests read the card and boot its root under qemu-user.

Needs root, binfmt_misc, qemu-user-static, debootstrap, systemd-container,
mtools, e2fsprogs, fdisk: deploy/setup.sh dev installs the packages, and the
tests fail (never skip) when something is missing.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.image.boot import boot_card, loop_mount, partitions
from tests.image.conftest import CACHE, REPO, need_root, need_tools, run

pytestmark = pytest.mark.image

UNITS = ["aesynth.service", "aesynth-failure.service", "aesynth-governor.service",
         "aesynth-growdata.service", "aesynth-usb@.service", "aesynth-poweroff.path",
         "aesynth-poweroff.service", "aesynth-models.path"]
# gpiozero as the service runs it (its environment, user, read-only /sys): which pin factory?
GPIO_PROBE = """
import os, traceback
import lgpio
from gpiozero import Device
print("sys-gpio-writable", os.access("/sys/class/gpio/export", os.W_OK))
try:
    f = Device._default_pin_factory()
    print("factory", type(f).__name__)
except Exception as e:
    files = [fr.filename for fr in traceback.extract_tb(e.__traceback__)]
    print("error", type(e).__module__, type(e).__name__, e, "in", " ".join(files))
try:
    lgpio.gpiochip_open(0)
except Exception as e:
    print("lgpio", e)
"""
SAMPLE_RATE = 22050  # models/default (LOW_LATENCY frame at 22050 Hz)


def _prepare() -> None:
    need_root()
    need_tools("debootstrap", "systemd-nspawn", "nsenter", "sfdisk", "mkfs.ext4", "mkfs.vfat",
               "mcopy", "mtype", "e2fsck", "resize2fs", "losetup", "update-binfmts")
    if not Path("/usr/bin/qemu-aarch64-static").exists() and os.uname().machine != "aarch64":
        pytest.fail("qemu-user-static is missing (apt-get install qemu-user-static)",
                    pytrace=False)
    p = run([str(REPO / "image" / "binfmt.sh")])
    if p.returncode != 0:
        pytest.fail(f"arm64 binaries cannot run here: {p.stderr.strip()}", pytrace=False)


@pytest.fixture(scope="session")
def card_lock() -> Iterator[None]:
    """One session at a time builds and boots from cache/image (shared by checkouts' runs)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def card(card_lock: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The card image, built this session from the cached synthetic base.

    AESYNTH_TEST_CARD=PATH reuses a card built earlier (to rerun a boot test after changing
    only the tests); the default builds from this checkout."""
    _prepare()
    reuse = os.environ.get("AESYNTH_TEST_CARD")
    if reuse:
        return Path(reuse)
    rootfs, base = CACHE / "base-rootfs", CACHE / "base.img"
    if not rootfs.is_dir():
        subprocess.run([str(REPO / "tests/image/make_base_rootfs.sh"), str(rootfs)], check=True)
    if not base.exists() or base.stat().st_mtime < rootfs.stat().st_mtime:
        subprocess.run([str(REPO / "tests/image/make_base_image.sh"), str(rootfs), str(base)],
                       check=True)
    work = tmp_path_factory.mktemp("card")
    key = work / "id_test.pub"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test@aesynth",
                    "-f", str(work / "id_test")], check=True)
    out = CACHE / "test-card.img"
    p = run([str(REPO / "image/build.sh"), "--base", str(base), "--output", str(out),
             "--wheelhouse", str(CACHE / "wheelhouse"), "--hostname", "aesynth-test",
             "--user", "player", "--ssh-key", str(key)], timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def card_root(card: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The card's root filesystem, mounted read-only."""
    where = tmp_path_factory.mktemp("card-root") / "root"
    with loop_mount(card, partitions(card)[1], where, read_only=True) as root:
        yield root


def test_partitions_like_raspberry_pi_os_plus_data(card: Path) -> None:
    parts = partitions(card)
    assert [p["type"] for p in parts] == ["c", "83", "83"]
    assert parts[1]["start"] + parts[1]["size"] <= parts[2]["start"]
    for p in parts[1:]:
        r = run(["e2fsck", "-fn", f"{card}?offset={p['start'] * 512}"])
        assert r.returncode == 0, r.stdout + r.stderr
    label = run(["blkid", "-p", "-O", str(parts[2]["start"] * 512), "-s", "LABEL", "-o",
                 "value", str(card)]).stdout.strip()
    assert label == "aesynth-data"
    assert Path(f"{card}.bmap").exists()


def test_boot_partition(card: Path) -> None:
    boot = f"{card}@@{partitions(card)[0]['start'] * 512}"
    cmdline = run(["mtype", "-i", boot, "::cmdline.txt"], check=True).stdout
    assert len(cmdline.strip().splitlines()) == 1
    words = cmdline.split()
    assert "ro" in words and "rw" not in words
    assert not any(w.startswith("init=") for w in words)  # Raspberry Pi OS's resize is gone
    assert any(w.startswith("root=PARTUUID=") and w.endswith("-02") for w in words)
    config = run(["mtype", "-i", boot, "::config.txt"], check=True).stdout
    assert "dtparam=i2c_arm=on" in config and "dtoverlay=vc4-kms-v3d" in config


def test_read_only_root_and_data_partition(card_root: Path) -> None:
    fstab = [ln.split() for ln in (card_root / "etc/fstab").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    by_dir = {f[1]: f for f in fstab}
    assert "ro" in by_dir["/"][3].split(",")
    assert "ro" in by_dir["/boot/firmware"][3].split(",")
    data = by_dir["/var/lib/aesynth"]
    assert data[0].endswith("-03") and {"nosuid", "nodev", "noexec"} <= set(data[3].split(","))
    assert by_dir["/var/log"][2] == "tmpfs"
    assert (card_root / "etc/machine-id").read_text() == ""


def test_units_installed_enabled_and_masked(card_root: Path) -> None:
    wants = card_root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("aesynth.service", "aesynth-governor.service", "aesynth-growdata.service",
                 "aesynth-poweroff.path", "aesynth-models.path"):
        assert (wants / unit).is_symlink(), unit
    for unit in ("userconfig.service", "raspi-config.service", "dphys-swapfile.service"):
        assert os.readlink(card_root / "etc/systemd/system" / unit) == "/dev/null", unit
    assert (card_root / "etc/udev/rules.d/90-aesynth-usb.rules").exists()
    assert "hw:CARD=Headphones" in (card_root / "etc/asound.conf").read_text()


def test_no_password_anywhere_and_first_boot_settings(card_root: Path) -> None:
    for line in (card_root / "etc/shadow").read_text().splitlines():
        name, pw = line.split(":")[:2]
        # "*" never matches, "!..." is locked; "" would let anyone in, "$..." is a hash.
        assert pw == "*" or pw.startswith("!"), f"{name} has a usable password field {pw!r}"
    assert (card_root / "etc/hostname").read_text().strip() == "aesynth-test"
    home = card_root / "home/player"
    keys = (home / ".ssh/authorized_keys").read_text()
    assert keys.startswith("ssh-ed25519 ") and keys.strip().endswith("test@aesynth")
    assert oct((home / ".ssh/authorized_keys").stat().st_mode & 0o777) == "0o600"
    sshd = (card_root / "etc/ssh/sshd_config.d/aesynth.conf").read_text()
    assert "PasswordAuthentication no" in sshd and "PermitRootLogin no" in sshd
    assert list((card_root / "etc/ssh").glob("ssh_host_ed25519_key"))


def test_systemd_analyze_verify_clean(card_root: Path) -> None:
    # The card's own systemd (arm64, emulated) checks the units against the card's tree.
    units = [f"/etc/systemd/system/{u}" for u in UNITS if "@" not in u]
    units.append("/etc/systemd/system/aesynth-usb@sda1.service")
    p = run(["systemd-analyze", "verify", f"--root={card_root}", *units])
    # verify resolves instance names from the template
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr


def test_security_exposure_score(card_root: Path) -> None:
    p = run(["systemd-analyze", "security", "--offline=true", f"--root={card_root}",
             "--no-pager", "aesynth.service"])
    m = re.search(r"Overall exposure level for aesynth\.service: ([0-9.]+)", p.stdout)
    assert m, p.stdout[-2000:] + p.stderr
    score = float(m.group(1))
    print(f"systemd-analyze security aesynth.service: {score}", file=sys.stderr)
    # 0 = locked down, 10 = exposed; real-time audio keeps RestrictRealtime off.
    assert score <= 2.5, p.stdout


def test_boot_plays_the_default_model(card: Path, tmp_path: Path) -> None:
    with boot_card(card, tmp_path / "boot") as boot:
        boot.wait_for_audio(min_bytes=SAMPLE_RATE * 4, timeout=420)
        state = boot.run("systemctl", "show", "aesynth.service", "-p", "ActiveState",
                         "-p", "SubState", "-p", "User", "-p", "LimitRTPRIO", "-p",
                         "LimitMEMLOCK", "-p", "NRestarts")
        props = dict(ln.split("=", 1) for ln in state.stdout.split())
        journal = boot.run("journalctl", "-u", "aesynth.service", "--no-pager", "-o", "cat").stdout
        assert props["ActiveState"] == "active" and props["SubState"] == "running", \
            f"{props}\n{journal[-3000:]}"
        assert props["User"] == "aesynth"
        assert props["LimitRTPRIO"] == "95" and props["LimitMEMLOCK"] == "infinity"
        assert props["NRestarts"] == "0", journal[-3000:]
        assert "first audio period written" in journal, journal[-3000:]
        pid = boot.run("systemctl", "show", "aesynth.service", "-p", "MainPID", "--value")
        owner = boot.run("stat", "-c", "%U", f"/proc/{pid.stdout.strip()}")
        assert owner.stdout.strip() == "aesynth"  # really runs as aesynth, not root
        size1 = boot.out.stat().st_size
        boot.wait_for_audio(min_bytes=size1 + SAMPLE_RATE * 4, timeout=120)  # still playing
        audio = np.fromfile(boot.out, dtype="<f4")  # before the data partition is unmounted

        # Live health: `aesynth status` reads /run/aesynth/status.json (rewritten each second).
        st = boot.run("/opt/aesynth/venv/bin/aesynth", "status", timeout=120)
        assert st.returncode == 0, st.stdout + st.stderr
        assert "device      playing" in st.stdout and "hop cost    p99" in st.stdout, st.stdout
        wd = boot.run("systemctl", "show", "aesynth.service", "-p", "WatchdogUSec", "-p",
                      "Type", "-p", "RestartPreventExitStatus", "-p", "Restart").stdout
        assert "WatchdogUSec=10s" in wd and "Type=notify" in wd and "Restart=on-failure" in wd
        assert "RestartPreventExitStatus=2 3" in wd, wd

        # GPIO: gpiozero resolves to lgpio inside the card, as the service runs it (/sys
        # read-only); the container has no /dev/gpiochip0, so lgpio itself says so.
        g = boot.run("systemd-run", "--wait", "--pipe", "--quiet", "-p", "User=aesynth",
                     "-p", "ProtectKernelTunables=yes", "-p", "WorkingDirectory=/var/lib/aesynth",
                     "-p", "Environment=GPIOZERO_PIN_FACTORY=lgpio",
                     "/opt/aesynth/venv/bin/python", "-c", GPIO_PROBE, timeout=180)
        print(f"gpio in the card: {g.stdout.strip()} {g.stderr.strip()}", file=sys.stderr)
        assert "sys-gpio-writable False" in g.stdout, g.stdout + g.stderr
        # The factory gpiozero builds is lgpio's (its __init__ is where it stops: no chip here)
        assert "factory LGPIOFactory" in g.stdout or "gpiozero/pins/lgpio.py" in g.stdout, \
            g.stdout + g.stderr
        assert "pins/native.py" not in g.stdout and "/sys/class/gpio/export" not in g.stdout
        assert "lgpio " in g.stdout, g.stdout  # lgpio's native library loads on the card
        jr = boot.run("journalctl", "-u", "aesynth.service", "--no-pager", "-o", "cat").stdout
        assert "/sys/class/gpio" not in jr, jr[-2000:]  # the app never tried sysfs either

        # The watchdog: a stalled player (SIGSTOP: no WATCHDOG=1 any more) is killed and
        # restarted by systemd within WatchdogSec, not left silent.
        main = boot.run("systemctl", "show", "aesynth.service", "-p", "MainPID",
                        "--value").stdout.strip()
        boot.run("sh", "-c", f"kill -STOP {main}")
        deadline = time.monotonic() + 120
        restarted = {}
        while time.monotonic() < deadline:
            out = boot.run("systemctl", "show", "aesynth.service", "-p", "NRestarts", "-p",
                           "MainPID").stdout
            restarted = dict(ln.split("=", 1) for ln in out.split())
            if restarted.get("NRestarts") == "1" and restarted.get("MainPID") not in ("0", main):
                break
            time.sleep(1)
        jr = boot.run("journalctl", "-u", "aesynth.service", "--no-pager").stdout
        assert restarted.get("NRestarts") == "1", f"{restarted}\n{jr[-3000:]}"
        assert "Watchdog timeout" in jr or "watchdog" in jr.lower(), jr[-3000:]

        # Quitting on the card (Cycle twice, [play] quit = "poweroff") writes the request the
        # player may write; systemd powers the box off, stopping the player cleanly first.
        boot.wait_for_audio(min_bytes=boot.out.stat().st_size + SAMPLE_RATE * 2, timeout=300)
        boot.run("setpriv", "--reuid=aesynth", "--regid=aesynth", "--clear-groups", "sh", "-c",
                 "echo 1 > /run/aesynth/poweroff")
        rc = boot.proc.wait(timeout=180)  # the container halts: nspawn exits
        assert rc == 0, boot.tail()
    assert audio.size >= 2 * SAMPLE_RATE
    assert np.isfinite(audio).all()
    assert float(np.sqrt(np.mean(audio[-SAMPLE_RATE:] ** 2))) > 1e-3, "silent output"
    assert float(np.max(np.abs(audio))) <= 1.0


def test_growdata_grows_the_last_partition(tmp_path: Path) -> None:
    """aesynth-growdata on a loop device: partition 3 and its ext4 fill the disk."""
    need_root()
    img = tmp_path / "card.bin"
    run(["truncate", "-s", "96M", str(img)], check=True)
    run(["sfdisk", "-q", str(img)], input="label: dos\nstart=2048, size=16M, type=c\n"
        "size=16M, type=83\nsize=16M, type=83\n", check=True)
    dev = run(["losetup", "--find", "--show", "--partscan", str(img)], check=True).stdout.strip()
    made = []
    try:
        run(["partx", "-a", dev])  # --partscan may not have made them yet
        name = Path(dev).name
        for n in (1, 2, 3):
            node = Path(f"{dev}p{n}")
            if not node.exists():
                major, minor = Path(f"/sys/class/block/{name}p{n}/dev").read_text().split(":")
                run(["mknod", str(node), "b", major, minor.strip()], check=True)
                made.append(node)
        run(["mkfs.ext4", "-q", "-F", f"{dev}p3"], check=True)
        mnt = tmp_path / "data"
        mnt.mkdir()
        run(["mount", f"{dev}p3", str(mnt)], check=True)
        try:
            before = os.statvfs(mnt).f_blocks * os.statvfs(mnt).f_frsize
            p = run([str(REPO / "image/rootfs/opt/aesynth/bin/aesynth-growdata"), str(mnt)])
            after = os.statvfs(mnt).f_blocks * os.statvfs(mnt).f_frsize
            grown = (mnt / ".grown").exists()
        finally:
            run(["umount", str(mnt)])
        parts = run(["sfdisk", "-J", str(img)], check=True).stdout
        p3 = json.loads(parts)["partitiontable"]["partitions"][2]
        assert (p3["start"] + p3["size"]) * 512 == 96 << 20  # the partition now ends at the end
        if "Permission denied to resize" in p.stderr:
            # This sandbox denies online resizing (EXT4_IOC_RESIZE_FS); root on a Pi may.
            # The script then fails (no marker) and is retried at the next boot.
            assert p.returncode != 0 and not grown
        else:
            assert p.returncode == 0 and grown, p.stdout + p.stderr
            assert after > before + (40 << 20), (before, after)
    finally:
        run(["losetup", "-d", dev])
        for node in made:
            node.unlink(missing_ok=True)


def test_a_bad_config_stays_failed_with_its_notice(card: Path, tmp_path: Path) -> None:
    """Exit 2 is not restarted (RestartPreventExitStatus), nor retried by the supervisor."""
    with boot_card(card, tmp_path / "boot", config_extra="\n[bogus]\nkey = 1\n") as boot:
        deadline = time.monotonic() + 420
        props: dict = {}
        while time.monotonic() < deadline:
            out = boot.run("systemctl", "show", "aesynth.service", "-p", "ActiveState", "-p",
                           "ExecMainStatus", "-p", "NRestarts").stdout
            props = dict(ln.split("=", 1) for ln in out.split())
            if props.get("ActiveState") == "failed":
                break
            time.sleep(2)
        assert props.get("ActiveState") == "failed" and props.get("ExecMainStatus") == "2", props
        time.sleep(30)  # past the supervisor's 20 s retry: it must not retry a bad config
        out = boot.run("systemctl", "show", "aesynth.service", "-p", "ActiveState", "-p",
                       "NRestarts").stdout
        again = dict(ln.split("=", 1) for ln in out.split())
        journal = boot.run("journalctl", "--no-pager", "-o", "cat").stdout
        assert again == {"ActiveState": "failed", "NRestarts": "0"}, journal[-3000:]
        assert "unknown section(s) bogus" in journal
        assert "aesynth: BAD CONFIG" in journal, journal[-3000:]  # the notice, on the OLED
