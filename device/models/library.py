"""Models on the box: the library, USB-stick import, and ``aesynth import``.

The library is the shipped models (read-only, e.g. ``models/``) followed by
the user's models directory on the writable data partition, each sorted by
name: a stable order for the MODEL button.  The current model is remembered
across boots in a small state file written atomically.

Import (from a stick, or ``aesynth import PATH``) treats every bundle as
untrusted and installs only what passed every check:

1. read it in this process with :func:`device.models.bundle.check_bundle` without
   running the models: caps, names, no symlinks or path traversal, zip
   members read with a size cap (never extracted), checksums, flatbuffer
   header.  Its files are now in memory, so a stick pulled or changed from
   here on cannot affect what gets installed;
2. write those bytes (our own three file names, nothing else) into
   ``MODELS/.incoming-NAME-XXXX/``, fsync the files and the directory;
3. validate that copy fully in a child process with time and memory limits
   (:mod:`device.models.validate_child`): both models load and turn a test frame
   into finite numbers;
4. rename it to ``MODELS/NAME`` and fsync ``MODELS``.

Same name already installed: identical model files are reported
``unchanged``; different ones **replace** the old bundle (a stick is how a
user updates a model), keeping the old until the new one is complete and
validated: ``NAME`` is renamed to ``.old-NAME-XXXX``, the new one renamed
into place, then the old removed.  :func:`recover_models_dir` (run when the
library opens and before every import) puts an ``.old-*`` back if a kill
came between the two renames, and deletes ``.incoming-*`` leftovers, so a
kill -9 at any point leaves the previous set of models whole.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import secrets
import stat
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from device.state.atomic import (
    OLD_PREFIX,
    crash_point,
    fsync_dir,
    loads_strict,
    read_json,
    remove_leftovers,
    remove_path,
    swap_dir,
    write_file_synced,
    write_json_atomic,
)
from device.models.bundle import MANIFEST, Bundle, check_bundle, read_bundle, sha256_file
from device.errors import LibraryError, Problem
from device.sound.scheduling import name_thread
from device.models.validate_child import (
    DEFAULT_CPU_S,
    DEFAULT_MEMORY_MIB,
    DEFAULT_NICE,
    DEFAULT_TIMEOUT_S,
    validate_in_child,
)

log = logging.getLogger(__name__)

INCOMING_PREFIX = ".incoming-"
LOCK_NAME = ".import.lock"
MAX_BUNDLES_PER_SOURCE = 64  # a stick with thousands of zips must not stall the box
STICK_FOLDER = "aesynth"  # bundles on a stick: its root, or this folder on it
STATE_VERSION = 1


def default_user_dir() -> Path:
    """$AESYNTH_MODELS_DIR, else ~/.local/share/aesynth/models: where ``play`` looks with
    no ``[model] user_dir`` (device.state.config.user_models_dir)."""
    from device.state.config import user_models_dir

    return user_models_dir()


# -- the library ------------------------------------------------------------------
@dataclass(frozen=True)
class ModelEntry:
    """One model in the library; ``origin`` is "shipped" or "user"."""

    name: str
    path: Path
    origin: str

    @property
    def key(self) -> str:
        return f"{self.origin}:{self.name}"


class ModelLibrary:
    """Shipped models then user models, each sorted by name; remembers the current one.

    ``shipped_dir`` or ``user_dir`` may be missing (an empty part).  A model
    with the same name in both is listed twice, told apart by ``origin``.
    """

    def __init__(self, shipped_dir: str | os.PathLike | None,
                 user_dir: str | os.PathLike | None, state_file: str | os.PathLike):
        self.shipped_dir = Path(shipped_dir) if shipped_dir else None
        self.user_dir = Path(user_dir) if user_dir else None
        self.state_file = Path(state_file)
        self._current_key: str | None = None
        self._state_read = False
        if self.user_dir is not None and self.user_dir.is_dir():
            recover_models_dir(self.user_dir)
        remove_leftovers(self.state_file.parent, for_name=self.state_file.name)

    def entries(self) -> list[ModelEntry]:
        """Every model, in the stable library order (re-read from disk each call)."""
        return (_scan_models(self.shipped_dir, "shipped")
                + _scan_models(self.user_dir, "user"))

    def find(self, name_or_key: str) -> ModelEntry | None:
        """The entry with this key ("user:NAME"), else the first with this name."""
        entries = self.entries()
        for e in entries:
            if e.key == name_or_key:
                return e
        return next((e for e in entries if e.name == name_or_key), None)

    def current(self, entries: list[ModelEntry] | None = None) -> ModelEntry:
        """The remembered model; else shipped "default"; else the first one.

        ``entries`` is a listing from :meth:`entries` to choose from (one scan
        of the disk for callers that need both); None reads the disk.
        """
        if entries is None:
            entries = self.entries()
        if not entries:
            raise LibraryError(f"no models: {self._where()} hold no bundle directories")
        key = self._remembered()
        for e in entries:
            if e.key == key:
                return e
        for e in entries:
            if e.key == "shipped:default":
                return e
        return entries[0]

    def step(self, delta: int) -> ModelEntry:
        """Move ``delta`` models on (wrapping), remember and return the new current one."""
        entries = self.entries()  # one scan: a rename between two would lose the current
        cur = self.current(entries)
        i = entries.index(cur)
        entry = entries[(i + int(delta)) % len(entries)]
        self.select(entry)
        return entry

    def select(self, entry: ModelEntry) -> None:
        """Remember ``entry`` as the current model (state file written atomically)."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.state_file, {"format_version": STATE_VERSION,
                                            "current": entry.key})
        self._current_key = entry.key
        self._state_read = True

    def load(self, entry: ModelEntry, *, check_models: bool = False) -> Bundle:
        """Read the bundle (checked; models are run only with ``check_models``:
        user models were run at import, and the engine loads them next anyway)."""
        return read_bundle(entry.path, check_models=check_models)

    def _remembered(self) -> str | None:
        if not self._state_read:
            self._state_read = True
            state, why = read_json(self.state_file, max_bytes=4096)
            if why:
                log.warning("ignoring the library state file: %s", why)
            elif isinstance(state, dict) and isinstance(state.get("current"), str):
                self._current_key = state["current"]
            elif state is not None:
                log.warning("ignoring the library state file %s: no 'current' model key",
                            self.state_file)
        return self._current_key

    def _where(self) -> str:
        return " and ".join(repr(str(d)) for d in (self.shipped_dir, self.user_dir) if d) \
            or "no directories"

    def __repr__(self) -> str:
        return (f"<ModelLibrary shipped={str(self.shipped_dir)!r} user={str(self.user_dir)!r} "
                f"current={self._current_key!r}>")


def _scan_models(directory: Path | None, origin: str) -> list[ModelEntry]:
    if directory is None:
        return []
    try:
        found = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        log.warning("cannot list models in %s: %s", directory, e)
        return []
    entries = [ModelEntry(d.name, Path(d.path), origin) for d in found
               if not d.name.startswith(".") and d.is_dir(follow_symlinks=False)
               and os.path.lexists(os.path.join(d.path, MANIFEST))]
    return sorted(entries, key=lambda e: (e.name.casefold(), e.name))


# -- finding bundles on a stick ----------------------------------------------------
def find_bundles(source: str | os.PathLike) -> list[Path]:
    """Bundle candidates at ``source``: itself if it is one, else the directories
    holding a manifest and the .zip files in it (or in its ``aesynth/`` folder),
    sorted by name.  Symbolic links are returned too, so they are rejected by name."""
    source = Path(source)
    if source.suffix.lower() == ".zip" or (source / MANIFEST).exists():
        return [source]
    inner = source / STICK_FOLDER
    # a link named aesynth/ could lead anywhere on the box: only a real folder counts
    folders = [source] + ([inner] if inner.is_dir() and not inner.is_symlink() else [])
    found: list[Path] = []
    for folder in folders:
        try:
            entries = sorted(os.scandir(folder), key=lambda d: d.name)
        except OSError as e:
            log.warning("cannot list %s: %s", folder, e)
            continue
        for d in entries:
            if d.name.startswith(".") or (folder == source and d.name == STICK_FOLDER):
                continue
            try:
                is_link = d.is_symlink()
                if d.name.lower().endswith(".zip") and (is_link or d.is_file()):
                    found.append(Path(d.path))
                elif d.is_dir() and os.path.lexists(os.path.join(d.path, MANIFEST)):
                    found.append(Path(d.path))  # d.is_dir() follows links: refused later
            except OSError:
                continue
    return found


# -- import --------------------------------------------------------------------------
@dataclass(frozen=True)
class Imported:
    """A bundle now in the models directory; ``status`` is new, replaced or unchanged."""

    name: str
    source: str
    path: Path
    status: str

    def line(self) -> str:
        verb = {"new": "imported", "replaced": "imported (replaced the old one)",
                "unchanged": "unchanged (already imported)"}[self.status]
        return f"{self.source}: {verb} as {self.name!r}"


@dataclass(frozen=True)
class Rejected:
    """A bundle that was not imported, and every reason."""

    source: str
    problems: list[Problem]

    @property
    def reason(self) -> str:
        return "; ".join(str(p) for p in self.problems)

    def line(self) -> str:
        return f"{self.source}: rejected: {self.reason}"


@dataclass
class ImportReport:
    """The outcome of one import: what went in, what did not and why."""

    source: str
    imported: list[Imported] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        """One short line for the OLED (25 characters), e.g. "USB: 7 new, 3 rejected"."""
        if not self.imported and not self.rejected:
            return "USB: no models found"
        parts = [f"{len(self.imported)} ok"] if self.imported else []
        if self.rejected:
            parts.append(f"{len(self.rejected)} rejected")
        return "USB: " + ", ".join(parts)

    def lines(self) -> list[str]:
        return [r.line() for r in self.imported] + [r.line() for r in self.rejected]


@dataclass(frozen=True)
class ImportProgress:
    """Sent to ``progress`` as each bundle moves on: stage is checking,
    validating, installing, imported or rejected; ``index`` counts from 0."""

    index: int
    total: int
    source: str
    stage: str
    detail: str = ""

    def short(self) -> str:
        """One short line for the OLED, e.g. "USB 3/10 validating"."""
        return f"USB {self.index + 1}/{self.total} {self.stage}"


class _ImportLock:
    """An exclusive lock on a models directory (the CLI and the USB watcher may race)."""

    def __init__(self, models_dir: Path, *, blocking: bool = True):
        self.path = models_dir / LOCK_NAME
        self.blocking = blocking
        self.fd: int | None = None

    def __enter__(self) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock
            self.fd = None


def recover_models_dir(models_dir: str | os.PathLike) -> list[str]:
    """Undo what an interrupted import left behind; return what was done.

    ``.old-NAME-*`` goes back to ``NAME`` if ``NAME`` is missing (a kill came
    between the two renames of a replace), else is removed; ``.incoming-*``
    and temporary files are removed.  Skipped while another import runs.
    """
    models_dir = Path(models_dir)
    done: list[str] = []
    try:
        with _ImportLock(models_dir, blocking=False) as got:
            if got:
                done = _recover_locked(models_dir)
    except OSError as e:  # read-only or missing directory: nothing we can repair
        log.warning("cannot check %s for interrupted imports: %s", models_dir, e)
    return done


def _recover_locked(models_dir: Path) -> list[str]:
    done = []
    entries = sorted(os.scandir(models_dir), key=lambda d: d.name)
    for d in entries:
        if d.name.startswith(OLD_PREFIX):
            name = d.name[len(OLD_PREFIX):].rsplit("-", 1)[0]
            target = models_dir / name
            if name and not os.path.lexists(target):
                os.rename(d.path, target)
                done.append(f"restored {name!r} from an interrupted replace")
            else:
                remove_path(Path(d.path))
                done.append(f"removed {d.name}")
    for d in entries:
        if d.name.startswith(INCOMING_PREFIX) and os.path.lexists(d.path):
            remove_path(Path(d.path))
            done.append(f"removed {d.name}")
    done += [f"removed {n}" for n in remove_leftovers(models_dir)]
    if done:
        fsync_dir(models_dir)
        for line in done:
            log.warning("models directory %s: %s", models_dir, line)
    return done


def import_bundles(source: str | os.PathLike | Iterable[str | os.PathLike],
                   models_dir: str | os.PathLike, *,
                   progress: Callable[[ImportProgress], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S, memory_mib: int = DEFAULT_MEMORY_MIB,
                   cpu_s: int = DEFAULT_CPU_S, nice: int = DEFAULT_NICE) -> ImportReport:
    """Import every bundle at ``source`` (a stick, a folder, a bundle, or a list of
    bundles) into ``models_dir``; never raises for a bad bundle.

    Runs on the caller's thread and takes seconds per bundle: call it off the
    audio thread.  ``progress`` is called from this thread; keep it short.
    ``should_stop`` is asked between bundles (the player is shutting down):
    the rest are then reported as not imported.
    """
    models_dir = Path(models_dir)
    if isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        candidates = find_bundles(source)
    else:
        candidates = [Path(p) for p in source]
        label = ", ".join(os.fspath(p) for p in candidates)
    report = ImportReport(label)
    if len(candidates) > MAX_BUNDLES_PER_SOURCE:
        for p in candidates[MAX_BUNDLES_PER_SOURCE:]:
            report.rejected.append(Rejected(str(p), [Problem(
                "bundle", f"at most {MAX_BUNDLES_PER_SOURCE} bundles are imported at once, "
                          f"found {len(candidates)}")]))
        candidates = candidates[:MAX_BUNDLES_PER_SOURCE]
    models_dir.mkdir(parents=True, exist_ok=True)
    total = len(candidates)

    def tell(i: int, src: Path, stage: str, detail: str = "") -> None:
        if progress is not None:
            try:
                progress(ImportProgress(i, total, str(src), stage, detail))
            except Exception:  # noqa: BLE001 -- a broken display must not stop an import
                log.exception("import progress callback failed")

    with _ImportLock(models_dir):
        _recover_locked(models_dir)
        names: dict[str, str] = {}
        for i, src in enumerate(candidates):
            if should_stop is not None and should_stop():
                report.rejected.append(Rejected(str(src), [Problem(
                    "import", "stopped before this bundle (the player is shutting down)")]))
                continue
            outcome = _import_one(src, models_dir, names, lambda s, d="", i=i, src=src:
                                  tell(i, src, s, d), timeout_s=timeout_s,
                                  memory_mib=memory_mib, cpu_s=cpu_s, nice=nice)
            if isinstance(outcome, Imported):
                report.imported.append(outcome)
                names[outcome.name] = outcome.source
                tell(i, src, "imported", outcome.name)
                log.info("%s", outcome.line())
            else:
                report.rejected.append(outcome)
                tell(i, src, "rejected", outcome.reason)
                log.info("%s", outcome.line())
    return report


def _import_one(src: Path, models_dir: Path, names: dict[str, str],
                tell: Callable[..., None], *, timeout_s: float, memory_mib: int,
                cpu_s: int, nice: int) -> Imported | Rejected:
    tell("checking")
    try:
        bundle, problems = check_bundle(src, check_models=False)
    except Exception as e:  # noqa: BLE001 -- untrusted input must not stop the other bundles
        log.exception("checking %s failed", src)
        return Rejected(str(src), [Problem("bundle", f"cannot be read: {type(e).__name__}: "
                                                     f"{e}")])
    if bundle is None:
        return Rejected(str(src), problems)
    if bundle.name in names:
        return Rejected(str(src), [Problem("name", f"{bundle.name!r} is also the name of "
                                                   f"{names[bundle.name]}, imported just now")])
    target = models_dir / bundle.name
    if _same_models(target, bundle):
        return Imported(bundle.name, str(src), target, "unchanged")
    incoming = models_dir / f"{INCOMING_PREFIX}{bundle.name}-{secrets.token_hex(4)}"
    try:
        tell("installing", "copying")
        _write_bundle_files(incoming, bundle)
        crash_point("import-after-copy")
        tell("validating")
        verdict = validate_in_child(incoming, timeout_s=timeout_s, memory_mib=memory_mib,
                                    cpu_s=cpu_s, nice=nice)
        if not verdict.ok:
            return Rejected(str(src), verdict.problems)
        if verdict.name != bundle.name:  # the copy is not what we read: refuse it
            return Rejected(str(src), [Problem("name", f"the installed copy is named "
                                               f"{verdict.name!r}, expected {bundle.name!r}")])
        crash_point("import-after-validate")
        tell("installing", "renaming")
        status = swap_dir(incoming, target, crash_at="import-between-renames")
    except OSError as e:
        return Rejected(str(src), [Problem("models directory", f"cannot install into "
                                           f"{str(models_dir)!r}: {e.strerror or e}")])
    finally:
        if os.path.lexists(incoming):
            remove_path(incoming)
    return Imported(bundle.name, str(src), target, status)


def _same_models(target: Path, bundle: Bundle) -> bool:
    """True when ``target`` already holds this bundle's manifest and model files."""
    if not target.is_dir() or target.is_symlink():
        return False
    try:
        manifest = loads_strict((target / MANIFEST).read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    if manifest != bundle.manifest:
        return False
    for mf in (bundle.encoder, bundle.decoder):
        try:
            if sha256_file(target / mf.file) != mf.sha256:
                return False
        except OSError:
            return False
    return True


def _write_bundle_files(incoming: Path, bundle: Bundle) -> None:
    """Our own copy: the manifest as parsed and the two model files, nothing else."""
    os.mkdir(incoming, 0o755)
    manifest = json.dumps(bundle.manifest, indent=1, allow_nan=False) + "\n"
    write_file_synced(incoming / MANIFEST, manifest.encode("utf-8"))
    for mf in (bundle.encoder, bundle.decoder):
        write_file_synced(incoming / mf.file, mf.content)
    fsync_dir(incoming)


# -- the USB stick watcher ---------------------------------------------------------
class UsbWatcher:
    """Imports the bundles of each stick mounted under ``mount_root``, once per insertion.

    A stick is ``mount_root`` itself or a directory in it that is a mount
    point (any directory with ``require_mount=False``, for tests and for
    desktops without automount).  Polls every ``poll_s``; the import runs on
    the watcher's own thread and ends with ``on_import_report(report)``.
    A missing ``mount_root`` is simply no stick: it never blocks boot or play.
    """

    def __init__(self, mount_root: str | os.PathLike,
                 on_import_report: Callable[[ImportReport], None],
                 models_dir: str | os.PathLike, *,
                 on_progress: Callable[[ImportProgress], None] | None = None,
                 poll_s: float = 1.0, require_mount: bool = True,
                 timeout_s: float = DEFAULT_TIMEOUT_S, memory_mib: int = DEFAULT_MEMORY_MIB,
                 cpu_s: int = DEFAULT_CPU_S, nice: int = DEFAULT_NICE):
        self.mount_root = Path(mount_root)
        self.models_dir = Path(models_dir)
        self.on_import_report = on_import_report
        self.on_progress = on_progress
        self.poll_s = poll_s
        self.require_mount = require_mount
        self._limits = {"timeout_s": timeout_s, "memory_mib": memory_mib, "cpu_s": cpu_s,
                        "nice": nice}
        self._seen: set[tuple[str, int, int]] = set()
        self._sticks: list[Path] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current_stick(self) -> Path | None:
        """A mounted stick (the first by name), e.g. to record onto; None without one."""
        sticks = self._sticks
        return sticks[0] if sticks else None

    def start(self) -> UsbWatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="usb-watcher", daemon=True)
            self._thread.start()
        return self

    def poll(self) -> list[ImportReport]:
        """One look at the mount root: import each newly inserted stick."""
        sticks = self._find_sticks()
        self._sticks = [p for p, _ in sticks]
        present = {ident for _, ident in sticks}
        self._seen &= present  # a stick pulled out and put back is imported again
        reports = []
        for path, ident in sticks:
            if ident in self._seen or self._stop.is_set():
                continue
            self._seen.add(ident)
            log.info("USB stick at %s: importing bundles into %s", path, self.models_dir)
            try:
                report = import_bundles(path, self.models_dir, progress=self.on_progress,
                                        should_stop=self._stop.is_set, **self._limits)
            except OSError as e:  # the models directory itself: unwritable, full, lock
                # The stick stays seen (no retry loop every poll); the user hears why.
                report = ImportReport(str(path), rejected=[Rejected(str(path), [Problem(
                    "models directory", f"cannot import into {str(self.models_dir)!r}: "
                                        f"{e.strerror or e}")])])
            reports.append(report)
            for line in report.lines():
                log.warning("USB import: %s", line)
            try:
                self.on_import_report(report)
            except Exception:  # noqa: BLE001 -- the watcher outlives a broken callback
                log.exception("import report callback failed")
        return reports

    def _find_sticks(self) -> list[tuple[Path, tuple[str, int, int]]]:
        root = self.mount_root
        try:
            candidates = ([root] if os.path.ismount(root) else []) + sorted(
                Path(d.path) for d in os.scandir(root)
                if d.is_dir(follow_symlinks=False) and not d.name.startswith("."))
        except OSError:
            return []
        found = []
        for p in candidates:
            if self.require_mount and not os.path.ismount(p):
                continue
            try:
                st = os.stat(p)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                found.append((p, (str(p), st.st_dev, st.st_ino)))
        return found

    def _run(self) -> None:
        name_thread()
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 -- keep watching whatever a stick does
                log.exception("USB watcher poll failed")
            self._stop.wait(self.poll_s)

    def close(self) -> None:
        """Stop watching; an import in progress finishes only its current bundle."""
        self._stop.set()
        # from a callback on the watcher's own thread: stopping is all we can do
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
            self._thread = None

    def __enter__(self) -> UsbWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<UsbWatcher {str(self.mount_root)!r} -> {str(self.models_dir)!r} {state}>"


# -- aesynth import ------------------------------------------------------------------
def run_import(paths: list[str], models_dir: str | os.PathLike, *, out=None,
               timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_mib: int = DEFAULT_MEMORY_MIB) -> int:
    """One line per bundle; 0 when nothing was rejected, 1 otherwise."""
    out = out or sys.stdout
    rejected = 0
    for path in paths:
        if not os.path.exists(path) and not os.path.islink(path):
            print(f"{path}: no such file or directory", file=out)
            rejected += 1
            continue
        try:
            report = import_bundles(path, models_dir, timeout_s=timeout_s,
                                    memory_mib=memory_mib)
        except OSError as e:  # the models directory itself, not a bundle
            print(f"cannot import into {os.fspath(models_dir)!r}: {e.strerror or e}", file=out)
            return 1
        if not report.imported and not report.rejected:
            print(f"{path}: no bundles found (directories with {MANIFEST}, or .zip files)",
                  file=out)
            rejected += 1
            continue
        rejected += len(report.rejected)
        for line in report.lines():
            print(line, file=out)
    return 0 if rejected == 0 else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="import model bundles (e.g. from a USB stick) into the library",
        description="Validate bundles (directories or .zip; PATH may be a folder or stick "
                    "holding several) and copy the good ones into the models directory. "
                    "One line per bundle; exit 0 when nothing was rejected, else 1.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="bundle, .zip, or folder of them")
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="where imported models go (default: the config's [model] user_dir, "
                        "else $AESYNTH_MODELS_DIR, else ~/.local/share/aesynth/models: where "
                        "`aesynth play` looks)")
    p.add_argument("--config", metavar="FILE.toml",
                   help="the configuration `aesynth play` uses, for its [model] user_dir")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help=f"wall-clock limit for loading and test-running a bundle "
                        f"(default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--memory-mib", type=int, default=DEFAULT_MEMORY_MIB, metavar="MIB",
                   help=f"memory limit of the validating process (default "
                        f"{DEFAULT_MEMORY_MIB})")
    p.set_defaults(func=_run_import_command)


def _run_import_command(a: argparse.Namespace) -> int:
    from device.errors import ConfigError
    from device.state.config import load_config, user_models_dir
    from device.state.paths import typed

    if a.models_dir:
        models_dir = typed(a.models_dir)
    else:
        try:
            models_dir = user_models_dir(load_config(a.config).model)
        except ConfigError as e:
            print(f"aesynth import: {e}", file=sys.stderr)
            return 2
    return run_import(a.paths, models_dir, timeout_s=a.timeout, memory_mib=a.memory_mib)
