"""Where a path a person wrote points, and whether an output can be written, checked first.

Two rules, one per place a path can be written:

* a path typed on the command line is relative to the directory it was typed in
  (the current directory when the command starts);
* a path in a configuration file is relative to the folder holding that file.

Only the built-in defaults (``models``, the untrained test bundle) are relative to
the install directory.  ``~`` and ``$VARS`` are expanded everywhere.

Outputs are checked before any work starts (:func:`check_output_file`,
:func:`check_output_dir`), so a render of an hour of audio never fails at its
last step because the folder was missing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from device.errors import ConfigError

INSTALL_DIR = Path(__file__).resolve().parents[2]  # the checkout (or /opt/aesynth on the box)


def resolve(path: str | os.PathLike, base: str | os.PathLike) -> Path:
    """``path`` with ``~`` and ``$VARS`` expanded, made absolute against ``base`` (a
    directory) when it is relative; not required to exist."""
    p = Path(os.path.expandvars(os.path.expanduser(os.fspath(path))))
    return p if p.is_absolute() else Path(base) / p


def typed(path: str | os.PathLike) -> Path:
    """A path typed on the command line: relative to the current directory."""
    return resolve(path, Path.cwd())


def os_reason(error: OSError) -> str:
    """The OS's words for ``error``, lower case ("no such file or directory")."""
    return (error.strerror or str(error)).lower()


def check_output_dir(path: str | os.PathLike, *, what: str = "output folder",
                     must_exist: bool = False) -> Path:
    """Make sure files can be created in the folder ``path``; returns it.  A folder that
    does not exist yet (unless ``must_exist``) passes when it could be made: its nearest
    existing parent is checked, and nothing is created.  A probe file is created and
    removed, so a read-only filesystem is caught even for root.  Raises
    :class:`ConfigError` naming ``what``, the path and the OS's reason."""
    folder = Path(path)
    probe = folder
    try:
        if must_exist and not folder.exists():
            raise FileNotFoundError(2, "no such file or directory")
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise NotADirectoryError(20, f"{str(probe)!r} is not a directory"
                                     if probe != folder else "not a directory")
        with tempfile.TemporaryFile(dir=probe, prefix=".aesynth-probe-"):
            pass
    except OSError as e:
        raise ConfigError(f"{what} {str(folder)!r} cannot be written: {os_reason(e)}") from None
    return folder


def check_output_file(path: str | os.PathLike, *, what: str = "output file",
                      suffixes: tuple[str, ...] = ()) -> Path:
    """Make sure the file ``path`` can be written, before the work that produces it; returns
    it.  Its folder must exist (it is not created: a typo should not make folders), the path
    may not be a folder, and when ``suffixes`` are given (lower case, with the dot) its name
    must end in one of them.  Raises :class:`ConfigError` naming ``what`` and the path."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {str(p)!r} cannot be written: it is a directory")
    if suffixes and p.suffix.lower() not in suffixes:
        raise ConfigError(f"{what} {str(p)!r} must end in {' or '.join(suffixes)}, got "
                          f"{p.suffix or 'no suffix'!r}")
    parent = p.parent
    if not parent.is_dir():
        reason = "not a directory" if parent.exists() else "no such directory"
        raise ConfigError(f"{what} {str(p)!r} cannot be written: {str(parent)!r}: {reason}")
    check_output_dir(parent, what=f"{what} {str(p)!r}: folder", must_exist=True)
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{what} {str(p)!r} cannot be written: permission denied")
    return p


def unwritable(folders: dict[str, Path]) -> dict[str, str]:
    """For each folder (keyed by what names it, e.g. its config key) that files cannot be
    created in, one line saying why (:func:`check_output_dir`); the rest are left out."""
    out = {}
    for key, folder in folders.items():
        try:
            check_output_dir(folder, what=key)
        except ConfigError as e:
            out[key] = str(e)
    return out
