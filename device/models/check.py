"""``aesynth check PATH...``: validate bundles, one line per problem.

A PATH that is a folder but no bundle (a USB stick, a ``models/`` folder) is
searched for bundle folders (holding ``manifest.json``) up to
:data:`SEARCH_DEPTH` levels below it; each one found is checked.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from device.models.bundle import MANIFEST, check_bundle
from device.errors import RuntimeUnavailable

SEARCH_DEPTH = 4  # levels below a PATH searched: STICK/aesynth/models/<name> is 3


def find_bundle_dirs(root: str | os.PathLike, *,
                     depth: int = SEARCH_DEPTH) -> tuple[list[Path], list[str]]:
    """Folders holding a manifest at most ``depth`` levels below ``root``, in name
    order, and one line for each folder that could not be listed.

    Hidden folders (``.Trashes``, ``.git``) and symbolic links are not entered (a
    link can loop or lead off the stick), nor is a bundle's own folder.
    """
    found: list[Path] = []
    unreadable: list[str] = []

    def walk(folder: Path, level: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda d: d.name)
        except OSError as e:
            unreadable.append(f"{folder}: cannot look inside: {e.strerror or e}")
            return
        for d in entries:
            try:
                if d.name.startswith(".") or not d.is_dir(follow_symlinks=False):
                    continue
            except OSError:  # gone since the listing
                continue
            path = Path(d.path)
            if os.path.lexists(path / MANIFEST):
                found.append(path)
            elif level < depth:
                walk(path, level + 1)

    walk(Path(root), 1)
    return found, unreadable


def _check_one(path: str, *, check_models: bool, out) -> bool:
    """Print ``OK`` or the bundle's problems; True when it is valid."""
    try:
        bundle, problems = check_bundle(path, check_models=check_models)
    except RuntimeUnavailable as e:
        print(f"{path}: cannot test the models: {e}", file=out)
        return False
    if bundle is not None:
        print(f"{path}: OK  {bundle.describe()}", file=out)
        return True
    for p in problems:
        print(f"{path}: {p}", file=out)
    return False


def run_check(paths: list[str], *, check_models: bool = True, out=sys.stdout) -> int:
    """Print ``OK`` or one line per problem for each bundle; 0 when all are valid.

    A folder without a manifest is searched (:func:`find_bundle_dirs`); finding no
    bundle there is a failure, said in one line naming the folder.
    """
    failed = 0
    for path in paths:
        if not (os.path.isdir(path) and not os.path.lexists(os.path.join(path, MANIFEST))):
            failed += not _check_one(path, check_models=check_models, out=out)
            continue
        bundles, unreadable = find_bundle_dirs(path)
        for line in unreadable:
            print(line, file=out)
        failed += len(unreadable)
        if not bundles:
            print(f"{path}: no bundle found (no folder holding {MANIFEST} up to "
                  f"{SEARCH_DEPTH} levels below it)", file=out)
            failed += 1
        for bundle in bundles:
            failed += not _check_one(str(bundle), check_models=check_models, out=out)
    return 0 if failed == 0 else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate model bundles (directories or .zip)",
                       description="Validate model bundles: exit 0 when all are valid, "
                                   "else 1 with one line per problem. A folder that is no "
                                   f"bundle is searched for bundle folders (holding "
                                   f"{MANIFEST}) up to {SEARCH_DEPTH} levels below it.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="bundle directory or .zip, or a folder holding bundles")
    p.add_argument("--no-run", action="store_true",
                   help="skip loading the models and running a test frame")
    p.set_defaults(func=lambda a: run_check(a.paths, check_models=not a.no_run))
