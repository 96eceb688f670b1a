"""``aesynth check PATH...``: validate bundles, one line per problem."""

from __future__ import annotations

import argparse
import sys

from device.models.bundle import check_bundle
from device.errors import RuntimeUnavailable


def run_check(paths: list[str], *, check_models: bool = True, out=sys.stdout) -> int:
    """Print ``OK`` or one line per problem for each bundle; 0 when all are valid."""
    failed = 0
    for path in paths:
        try:
            bundle, problems = check_bundle(path, check_models=check_models)
        except RuntimeUnavailable as e:
            print(f"{path}: cannot test the models: {e}", file=out)
            failed += 1
            continue
        if bundle is not None:
            print(f"{path}: OK  {bundle.describe()}", file=out)
        else:
            failed += 1
            for p in problems:
                print(f"{path}: {p}", file=out)
    return 0 if failed == 0 else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate model bundles (directories or .zip)",
                       description="Validate model bundles: exit 0 when all are valid, "
                                   "else 1 with one line per problem.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="bundle directory or .zip")
    p.add_argument("--no-run", action="store_true",
                   help="skip loading the models and running a test frame")
    p.set_defaults(func=lambda a: run_check(a.paths, check_models=not a.no_run))
