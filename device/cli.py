"""The ``aesynth`` command: one subcommand per job, each in the module that owns it.

A module joins the CLI by defining ``add_parser(subparsers)`` which registers
its subcommand and sets ``func`` (taking the parsed args, returning an exit
code); list the module in :data:`COMMAND_MODULES`.  Modules are imported only
when the CLI starts, so ``aesynth check`` never pulls in ALSA or MIDI.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from device import __version__

# Order is the order of ``aesynth --help``.
COMMAND_MODULES = [
    "device.play",
    "device.sound.render",
    "device.models.library",
    "device.models.check",
    "device.state.health",
]

log = logging.getLogger("aesynth")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aesynth",
        description="Play the hidden units of an autoencoder trained on music spectra.")
    parser.add_argument("--version", action="version", version=f"aesynth {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v info, -vv debug: the libraries' own "
                             "messages too); also accepted after the command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # not written yet on this branch
                continue
            raise
        module.add_parser(sub)
    for command in sub.choices.values():  # `aesynth play -v` as well as `aesynth -v play`
        command.add_argument("-v", "--verbose", dest="verbose_after", action="count",
                             default=0, help="more logging (-v info, -vv debug: the "
                                             "libraries' own messages too)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from device import console

    console.setup(args.verbose + getattr(args, "verbose_after", 0))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
