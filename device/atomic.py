"""Files that survive a power cut: whole or not at all.

Every write goes to a temporary name in the same directory, is flushed to
the disk (``fsync``), and is then renamed over the target; the directory is
fsynced so the rename itself is on the disk.  A reader therefore sees the old
contents or the new, never a mix.  Leftover temporary files (``.tmp-*``)
from a write that was cut short are ignored by readers and removed by
:func:`remove_leftovers`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
CRASH_ENV = "AESYNTH_CRASH_AT"


def crash_point(name: str) -> None:
    """Test hook: die here with SIGKILL when $AESYNTH_CRASH_AT names this point.

    Lets the tests kill a real process at an exact step of an atomic update
    and check that the previous state survives.  Costs one dict lookup.
    """
    if os.environ.get(CRASH_ENV) == name:
        log.warning("crash point %r reached: killing myself (test hook)", name)
        os.kill(os.getpid(), 9)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries (creations, renames) to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_synced(path: str | os.PathLike, data: bytes, *, mode: int = 0o644) -> None:
    """Create ``path`` (must not exist) holding ``data``, flushed to the disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{secrets.token_hex(4)}")
    try:
        write_file_synced(tmp, data)
        crash_point("atomic-before-rename")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON, atomically."""
    text = json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike, *, max_bytes: int = 1 << 20) -> tuple[Any, str | None]:
    """(object, None), or (None, why) for a missing, oversized or corrupt file.

    ``why`` is None with a None object only when the file does not exist.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"cannot read {str(path)!r}: {e.strerror}"
    if len(raw) > max_bytes:
        return None, f"{str(path)!r} is larger than the limit of {max_bytes} bytes"

    def no_constants(token: str) -> float:
        raise ValueError(f"non-finite number {token} is not JSON")

    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return None, f"{str(path)!r} is not valid JSON: {e}"
    if obj is None:  # keeps (None, None) meaning "no file"; we never store a bare null
        return None, f"{str(path)!r} holds JSON null"
    return obj, None


def remove_leftovers(directory: str | os.PathLike, *, for_name: str | None = None) -> list[str]:
    """Delete temporary files left by interrupted atomic writes; return their names.

    ``for_name`` limits this to the temporaries of that one file.
    """
    prefix = TMP_PREFIX + (f"{for_name}-" if for_name else "")
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for e in entries:
        if e.name.startswith(prefix) and e.is_file(follow_symlinks=False):
            try:
                os.unlink(e.path)
                removed.append(e.name)
            except OSError as err:
                log.warning("cannot remove leftover %s: %s", e.path, err)
    return removed
