"""Shared helpers for the SD image tests: root check, loop devices, a fake sysfs.

These tests need root (losetup, mount, chroot, systemd-nspawn).  CI runs as
root; elsewhere they fail with a message saying so rather than skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "cache" / "image"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the SD image tests need root (losetup, mount, chroot, nspawn); "
                    "CI runs them as root", pytrace=False)


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: deploy/setup.sh dev installs them", pytrace=False)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


class LoopDisk:
    """A file-backed loop device with one ext4 partition (never a real disk)."""

    def __init__(self, backing: Path, size_mib: int = 16) -> None:
        subprocess.run(["truncate", "-s", f"{size_mib}M", str(backing)], check=True)
        subprocess.run(["sfdisk", "-q", str(backing)], input="label: dos\nstart=2048, type=83\n",
                       text=True, check=True)
        self.backing = backing
        self.dev = run(["losetup", "--find", "--show", "--partscan", str(backing)],
                       check=True).stdout.strip()
        self.name = Path(self.dev).name
        self.part = f"{self.dev}p1"
        run(["partx", "-a", self.dev])  # --partscan may already have made it
        if not Path(self.part).exists():
            # No udev in a container: make the partition node from sysfs.
            majmin = Path(f"/sys/class/block/{self.name}p1/dev").read_text().strip()
            major, minor = majmin.split(":")
            subprocess.run(["mknod", self.part, "b", major, minor], check=True)
            self._made_node = True
        else:
            self._made_node = False
        subprocess.run(["mkfs.ext4", "-q", "-F", self.part], check=True)

    def close(self) -> None:
        run(["losetup", "-d", self.dev])
        if self._made_node:
            Path(self.part).unlink(missing_ok=True)


def fake_sysfs(root: Path, disk: str, *, removable: int = 1, mmc_type: str | None = None,
               holders: tuple[str, ...] = (), part_holders: tuple[str, ...] = ()) -> Path:
    """A sysfs tree with just ``disk`` (and partition ``{disk}p1``), laid out like /sys."""
    d = root / "block" / disk
    p = d / f"{disk}p1"
    (d / "holders").mkdir(parents=True)
    (p / "holders").mkdir(parents=True)
    (d / "removable").write_text(f"{removable}\n")
    (d / "size").write_text("32768\n")
    (p / "partition").write_text("1\n")
    for h in holders:
        (d / "holders" / h).mkdir()
    for h in part_holders:
        (p / "holders" / h).mkdir()
    if mmc_type:
        (d / "device").mkdir()
        (d / "device" / "type").write_text(f"{mmc_type}\n")
    cls = root / "class" / "block"
    cls.mkdir(parents=True)
    (cls / disk).symlink_to(d)
    (cls / f"{disk}p1").symlink_to(p)
    return root


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[LoopDisk]:
    need_root()
    need_tools("losetup", "sfdisk", "mkfs.ext4", "partx")
    disk = LoopDisk(tmp_path / "card.bin")
    try:
        yield disk
    finally:
        disk.close()
