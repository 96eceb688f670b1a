"""Boot a built card's root in systemd-nspawn (under qemu-user) and watch it play.

Shared by tests/image/test_card.py and bench/boot_bench.py.  The card's root is
mounted read-only from the image (as on the Pi) and its data partition
read-write; the container gets a test ALSA config whose default PCM is a file
(raw float32 mono at the bundle's rate), so "sound" is bytes in a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

OUT_NAME = "boot-test-out.raw"
# The card's fstab names partitions by PARTUUID, which the container has not:
# keep the RAM mounts, leave / (nspawn --read-only) and the data bind to nspawn.
TEST_FSTAB = """\
tmpfs  /tmp          tmpfs  nosuid,nodev,mode=1777,size=64M          0 0
tmpfs  /var/tmp      tmpfs  nosuid,nodev,mode=1777,size=16M          0 0
tmpfs  /var/log      tmpfs  nosuid,nodev,noexec,mode=0755,size=16M   0 0
tmpfs  /media        tmpfs  nosuid,nodev,noexec,mode=0755,size=1M    0 0
"""
TEST_ASOUND = f"""\
# aesynth boot test: the default PCM writes what it plays to the data partition.
pcm.!default {{
    type file
    slave.pcm "null"
    file "/var/lib/aesynth/{OUT_NAME}"
    format "raw"
}}
"""
TEST_CONFIG_EXTRA = """
[audio]
playback_device = "default"
pacing = "clock"
fallback = "fail"
"""


def partitions(image: Path) -> list[dict]:
    """The image's partitions (sfdisk's JSON: start and size in 512-byte sectors)."""
    out = subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)["partitiontable"]["partitions"]


@contextmanager
def loop_mount(image: Path, part: dict, where: Path, *, read_only: bool):
    """Mount one ext4 partition of ``image`` at ``where`` through its own loop device."""
    where.mkdir(parents=True, exist_ok=True)
    cmd = ["losetup", "--find", "--show", "--offset", str(part["start"] * 512),
           "--sizelimit", str(part["size"] * 512)]
    cmd += ["--read-only"] if read_only else []
    dev = subprocess.run([*cmd, str(image)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        opts = "ro,noload" if read_only else "rw"
        subprocess.run(["mount", "-t", "ext4", "-o", opts, dev, str(where)], check=True)
        try:
            yield where
        finally:
            subprocess.run(["umount", str(where)], check=False)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@dataclass
class Boot:
    """A running container: its root, data dir, nspawn process and timing marks."""

    root: Path
    data: Path
    proc: subprocess.Popen
    started_at: float                       # wall clock, just before nspawn was started
    console: Path
    marks: dict = field(default_factory=dict)
    _leader: int | None = None

    @property
    def out(self) -> Path:
        return self.data / OUT_NAME

    def leader(self, timeout: float = 60.0) -> int:
        """PID (host view) of the container's systemd."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
            if kids:
                self._leader = int(kids[0])
                return self._leader
            if self.proc.poll() is not None:
                raise RuntimeError(f"nspawn exited ({self.proc.returncode}): {self.tail()}")
            time.sleep(0.2)
        raise TimeoutError("no container init process")

    def run(self, *cmd: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a command inside the container (nsenter into all its namespaces)."""
        return subprocess.run(["nsenter", "-t", str(self.leader()), "-a", *cmd],
                              capture_output=True, text=True, timeout=timeout)

    def wait_for_audio(self, min_bytes: int, timeout: float) -> float:
        """Wall-clock time the output first reached ``min_bytes``; raises on timeout."""
        deadline = time.monotonic() + timeout
        first_byte = None
        while time.monotonic() < deadline:
            size = self.out.stat().st_size if self.out.exists() else 0
            if size > 0 and first_byte is None:
                first_byte = time.time()
                self.marks["first_bytes_wall"] = first_byte
            if size >= min_bytes:
                return first_byte or time.time()
            if self.proc.poll() is not None:
                raise RuntimeError(f"nspawn exited ({self.proc.returncode}): {self.tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.out} has {size} bytes after {timeout:.0f} s "
                           f"(wanted {min_bytes}); console:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def boot_card(image: Path, work: Path, *, machine: str = "aesynth-boot-test",
              config_extra: str = ""):
    """Boot the card's root in a container; yields a :class:`Boot`; powers off after.

    ``config_extra`` is appended to the card's /etc/aesynth/config.toml (a bad key, say)."""
    parts = partitions(image)
    if len(parts) != 3:
        raise ValueError(f"{image}: expected 3 partitions (boot, root, data), got {len(parts)}")
    work.mkdir(parents=True, exist_ok=True)
    (work / "fstab").write_text(TEST_FSTAB)
    (work / "asound.conf").write_text(TEST_ASOUND)
    console = work / "console.log"
    with ExitStack() as stack:
        root = stack.enter_context(loop_mount(image, parts[1], work / "root", read_only=True))
        data = stack.enter_context(loop_mount(image, parts[2], work / "data", read_only=False))
        (data / OUT_NAME).unlink(missing_ok=True)
        (data / ".grown").touch()  # growing the partition is tested on a loop device instead
        config = (root / "etc/aesynth/config.toml").read_text()
        (work / "config.toml").write_text(_merge_audio(config) + config_extra)
        cmd = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "-b",
               "-D", str(root), "--read-only", f"--machine={machine}",
               f"--bind={data}:/var/lib/aesynth",
               f"--bind-ro={work / 'fstab'}:/etc/fstab",
               f"--bind-ro={work / 'asound.conf'}:/etc/asound.conf",
               f"--bind-ro={work / 'config.toml'}:/etc/aesynth/config.toml"]
        log = open(console, "w")  # noqa: SIM115 - closed below
        stack.callback(log.close)
        started = time.time()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        boot = Boot(root=root, data=data, proc=proc, started_at=started, console=console)
        stack.callback(_power_off, boot)
        boot.leader()
        yield boot


def _merge_audio(config: str) -> str:
    """The card's config with its [audio] table (if any) replaced by the test's."""
    out, skip = [], False
    for line in config.splitlines():
        if line.strip().startswith("["):
            skip = line.strip() == "[audio]"
        if not skip:
            out.append(line)
    return "\n".join(out) + "\n" + TEST_CONFIG_EXTRA


def _descendants(pid: int) -> list[int]:
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    out = []
    for k in map(int, kids):
        out += [k, *_descendants(k)]
    return out


def _power_off(boot: Boot) -> None:
    """Halt the container (SIGRTMIN+3 to its systemd), then kill whatever is left.

    With --keep-unit the payload is not in a scope of its own, so a container
    that ignores the halt must be killed here by PID, or it outlives the test.
    """
    leader = boot._leader
    if boot.proc.poll() is None and leader:
        os.kill(leader, signal.SIGRTMIN + 3)
        try:
            boot.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    if leader:
        for pid in [leader, *_descendants(leader)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if boot.proc.poll() is None:
        boot.proc.kill()
    boot.proc.wait()
