"""Files that survive a power cut: whole or not at all.

Every write goes to a temporary name in the same directory, is flushed to
the disk (``fsync``), and is then renamed over the target; the directory is
fsynced so the rename itself is on the disk.  A reader therefore sees the old
contents or the new, never a mix.  Leftover temporary files (``.tmp-*``)
from a write that was cut short are ignored by readers and removed by
:func:`remove_leftovers`.

Whole directories (a model bundle, a dataset) are built and fsynced beside
their target and put in place by :func:`swap_dir`, which keeps the old one
until the new one is in place; :func:`recover_swap` undoes a kill between
its two renames.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"  # a directory swap_dir moved aside: .old-NAME-<8 hex digits>
CRASH_ENV = "AESYNTH_CRASH_AT"


def crash_point(name: str) -> None:
    """Test hook: die here with SIGKILL when $AESYNTH_CRASH_AT names this point.

    Lets the tests kill a real process at an exact step of an atomic update
    and check that the previous state survives.  Costs one dict lookup.
    """
    if os.environ.get(CRASH_ENV) == name:
        log.warning("crash point %r reached: killing myself (test hook)", name)
        os.kill(os.getpid(), 9)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to the disk (any descriptor of the file flushes its pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _no_constants(token: str) -> float:
    raise ValueError(f"non-finite number {token} is not JSON")


def loads_strict(raw: bytes | str) -> Any:
    """Parse JSON as the standard defines it: NaN and Infinity are refused.

    Raises ValueError (JSONDecodeError), UnicodeDecodeError, or RecursionError
    for a nesting bomb; untrusted input should catch all three.
    """
    text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    return json.loads(text, parse_constant=_no_constants)


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

    try:
        obj = loads_strict(raw)
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


def fsync_tree(directory: str | os.PathLike) -> None:
    """Flush the regular files directly in ``directory``, then the directory itself."""
    for e in os.scandir(directory):
        if e.is_file(follow_symlinks=False):
            fsync_file(e.path)
    fsync_dir(directory)


def remove_path(path: Path) -> None:
    """Remove a file, link or directory tree; a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def swap_dir(staged: str | os.PathLike, target: str | os.PathLike, *,
             crash_at: str = "swap-between-renames") -> str:
    """Put the complete, fsynced directory ``staged`` at ``target``; "new" or "replaced".

    Both must be in the same directory.  An existing ``target`` is renamed to
    ``.old-NAME-XXXXXXXX`` first and removed only once the new one is in
    place, so a kill at any point leaves the old or the new directory (or,
    between the renames, the old one aside: :func:`recover_swap` puts it
    back).  ``crash_at`` names the test crash point between the renames.
    """
    staged, target = Path(staged), Path(target)
    parent = target.parent
    if not os.path.lexists(target):
        os.rename(staged, target)
        fsync_dir(parent)
        return "new"
    old = parent / f"{OLD_PREFIX}{target.name}-{secrets.token_hex(4)}"
    os.rename(target, old)
    crash_point(crash_at)
    os.rename(staged, target)
    fsync_dir(parent)
    remove_path(old)
    fsync_dir(parent)
    return "replaced"


def recover_swap(target: str | os.PathLike) -> list[str]:
    """Undo a :func:`swap_dir` of ``target`` cut short; return what was done.

    With ``target`` missing its newest ``.old-`` copy is renamed back; every
    other ``.old-`` copy of it is removed.
    """
    target = Path(target)
    prefix = f"{OLD_PREFIX}{target.name}-"
    try:
        olds = [e for e in os.scandir(target.parent) if e.name.startswith(prefix)
                and len(e.name) == len(prefix) + 8
                and all(ch in "0123456789abcdef" for ch in e.name[len(prefix):])]
    except FileNotFoundError:
        return []
    olds.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns, reverse=True)
    done = []
    for e in olds:
        if not os.path.lexists(target):
            os.rename(e.path, target)
            done.append(f"restored {target.name!r} from an interrupted replace")
        else:
            remove_path(Path(e.path))
            done.append(f"removed {e.name}")
    if done:
        fsync_dir(target.parent)
        for line in done:
            log.warning("%s: %s", target.parent, line)
    return done
