"""deploy/flash.sh: what it refuses, what it writes and how it checks, on loop devices only.

Every refusal test hands flash.sh a file-backed loop device and a fake sysfs
(or a fake mount table) in which that device is the one thing that should
stop it; none can reach a real disk: no test passes --yes to a device that
should be refused, and stdin is empty so the prompt answers no.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.image.conftest import REPO, LoopDisk, fake_sysfs, need_tools, run

FLASH = REPO / "deploy" / "flash.sh"
BASH = shutil.which("bash") or "/bin/bash"


def flash(*args: str, env: dict | None = None, stdin: str = "") -> tuple[int, str]:
    e = {**os.environ, **(env or {})}
    p = run([BASH, str(FLASH), *args], env=e, input=stdin, timeout=120)
    return p.returncode, p.stdout + p.stderr


@pytest.fixture
def card_image(tmp_path: Path) -> Path:
    """An 8 MiB 'card image': random data at 1 and 5 MiB, holes elsewhere."""
    rng = np.random.default_rng(7)
    img = tmp_path / "card.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
        for at in (1 << 20, 5 << 20):
            f.seek(at)
            f.write(rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())
    return img


def holds_image(disk: Path, image: Path) -> bool:
    """Whether ``disk`` has the image's random MiB at 1 MiB (flash.sh wrote it)."""
    with open(disk, "rb") as a, open(image, "rb") as b:
        a.seek(1 << 20)
        b.seek(1 << 20)
        return a.read(1 << 20) == b.read(1 << 20)


def sha(path: Path, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(size)).hexdigest()


def test_shellcheck_clean() -> None:
    need_tools("shellcheck")
    scripts = [FLASH, *sorted((REPO / "image").glob("*.sh")),
               *sorted((REPO / "tests" / "image").glob("*.sh")),
               REPO / "image/rootfs/opt/aesynth/bin/aesynth-usb-mount",
               REPO / "image/rootfs/opt/aesynth/bin/aesynth-growdata"]
    p = run(["shellcheck", "--severity=info", *map(str, scripts)])
    assert p.returncode == 0, p.stdout


def test_refuses_a_missing_device(card_image: Path) -> None:
    rc, out = flash("--image", str(card_image), "--device", "/dev/aesynth-no-such-disk")
    assert rc == 3 and "no such device" in out


def test_refuses_a_regular_file(card_image: Path, tmp_path: Path) -> None:
    target = tmp_path / "not-a-disk"
    target.write_bytes(b"\0" * 4096)
    rc, out = flash("--image", str(card_image), "--device", str(target))
    assert rc == 3 and "not a block device" in out
    assert target.read_bytes() == b"\0" * 4096


def test_refuses_a_partition(card_image: Path, loop_disk: LoopDisk, tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", loop_disk.name)
    rc, out = flash("--image", str(card_image), "--device", loop_disk.part,
                    env={"AESYNTH_SYSFS": str(sysfs)})
    assert rc == 3 and "not a whole disk" in out


def test_refuses_a_non_removable_disk_per_the_real_sysfs(card_image: Path,
                                                         loop_disk: LoopDisk) -> None:
    # The kernel says loop devices are not removable: no fake sysfs needed.
    assert Path(f"/sys/block/{loop_disk.name}/removable").read_text().strip() == "0"
    rc, out = flash("--image", str(card_image), "--device", loop_disk.dev, "--yes")
    assert rc == 3 and "not removable" in out


def test_refuses_emmc_but_not_an_sd_card_in_a_built_in_reader(card_image: Path,
                                                              loop_disk: LoopDisk,
                                                              tmp_path: Path) -> None:
    emmc = fake_sysfs(tmp_path / "emmc", loop_disk.name, removable=0, mmc_type="MMC")
    rc, out = flash("--image", str(card_image), "--device", loop_disk.dev,
                    env={"AESYNTH_SYSFS": str(emmc)})
    assert rc == 3 and "not removable" in out
    sd = fake_sysfs(tmp_path / "sd", loop_disk.name, removable=0, mmc_type="SD")
    rc, out = flash("--image", str(card_image), "--device", loop_disk.dev,
                    env={"AESYNTH_SYSFS": str(sd)}, stdin="no\n")
    assert rc == 1 and "not written" in out  # passed every check, then the prompt said no


def test_refuses_a_mounted_disk(card_image: Path, loop_disk: LoopDisk, tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", loop_disk.name)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run(["mount", loop_disk.part, str(mnt)], check=True)
    try:
        rc, out = flash("--image", str(card_image), "--device", loop_disk.dev, "--yes",
                        env={"AESYNTH_SYSFS": str(sysfs)})
    finally:
        run(["umount", str(mnt)])
    assert rc == 3 and f"is mounted on {mnt}" in out
    assert not holds_image(loop_disk.backing, card_image)


def test_refuses_the_system_disk(card_image: Path, loop_disk: LoopDisk, tmp_path: Path) -> None:
    # A mount table in which the loop disk's partition holds "/".
    sysfs = fake_sysfs(tmp_path / "sys", loop_disk.name)
    mounts = tmp_path / "mounts"
    mounts.write_text(f"{loop_disk.part} / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n")
    rc, out = flash("--image", str(card_image), "--device", loop_disk.dev, "--yes",
                    env={"AESYNTH_SYSFS": str(sysfs), "AESYNTH_MOUNTS": str(mounts)})
    assert rc == 3 and "system disk (it holds /)" in out
    assert not holds_image(loop_disk.backing, card_image)


def test_refuses_a_disk_in_use_as_swap_or_held_by_dm(card_image: Path, loop_disk: LoopDisk,
                                                     tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", loop_disk.name)
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename Type Size Used Priority\n"
                     f"{loop_disk.part} partition 1024 0 -2\n")
    rc, out = flash("--image", str(card_image), "--device", loop_disk.dev, "--yes",
                    env={"AESYNTH_SYSFS": str(sysfs), "AESYNTH_SWAPS": str(swaps)})
    assert rc == 3 and "in use as swap" in out
    held = fake_sysfs(tmp_path / "held", loop_disk.name, part_holders=("dm-0",))
    rc, out = flash("--image", str(card_image), "--device", loop_disk.dev, "--yes",
                    env={"AESYNTH_SYSFS": str(held)})
    assert rc == 3 and "held by dm-0" in out


def test_asks_before_writing(card_image: Path, loop_disk: LoopDisk, tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", loop_disk.name)
    for answer in ("", "no\n", "y\n", "YES\n"):
        rc, out = flash("--image", str(card_image), "--device", loop_disk.dev,
                        env={"AESYNTH_SYSFS": str(sysfs)}, stdin=answer)
        assert rc == 1 and "not written" in out and "ERASE" in out
    assert not holds_image(loop_disk.backing, card_image)


@pytest.mark.parametrize("writer", ["dd", "bmaptool"])
def test_writes_and_verifies(card_image: Path, loop_disk: LoopDisk, tmp_path: Path,
                             writer: str) -> None:
    sysfs = fake_sysfs(tmp_path / "sys", loop_disk.name)
    env = {"AESYNTH_SYSFS": str(sysfs)}
    if writer == "bmaptool":
        need_tools("bmaptool")
        run(["bmaptool", "create", "-o", f"{card_image}.bmap", str(card_image)], check=True)
    else:
        # A PATH without bmaptool: flash.sh must fall back to dd.
        bindir = tmp_path / "bin"
        bindir.mkdir()
        for tool in ("dd", "sha256sum", "head", "stat", "du", "cut", "sed", "awk", "readlink",
                     "find", "cat", "basename", "dirname", "sync", "blockdev", "grep", "tr", "ls",
                     "mktemp", "id"):
            if shutil.which(tool):
                (bindir / tool).symlink_to(shutil.which(tool))
        env["PATH"] = str(bindir)
    rc, out = flash("--image", str(card_image), "--device", loop_disk.dev, "--yes", env=env)
    assert rc == 0, out
    assert (f"writing with {writer}") in out and "verified" in out
    size = card_image.stat().st_size
    # The loop device's backing file now holds the image's data where it has data.
    assert holds_image(loop_disk.backing, card_image)
    with open(card_image, "rb") as a, open(loop_disk.backing, "rb") as b:
        a.seek(5 << 20)
        b.seek(5 << 20)
        assert a.read(1 << 20) == b.read(1 << 20)
    if writer == "dd":
        assert sha(loop_disk.backing, size) == sha(card_image, size)


def test_option_errors(card_image: Path, tmp_path: Path) -> None:
    rc, out = flash("--image", str(card_image))
    assert rc == 1 and "--device /dev/sdX" in out
    rc, out = flash("--image", str(card_image), "--device", "/dev/null", "--output", "x.img")
    assert rc == 1 and "exclusive" in out
    rc, out = flash("--device", "/dev/null")
    assert rc == 1 and "--base IMAGE" in out
    rc, out = flash("--ssh", "not a host")
    assert rc == 1 and "USER@HOST" in out
    rc, out = flash("--ssh", "pi@box", "--device", "/dev/sdz")
    assert rc == 1 and "no --device" in out
    rc, out = flash("--frobnicate")
    assert rc == 2 and "unknown option" in out
