"""``aesynth play``: the command line of the instrument (arguments over the config file).

The instrument itself is :class:`device.app.App`; this module only turns the
arguments into its configuration, starts it, routes SIGTERM/SIGINT to a
clean stop, and returns its exit code (device/app.py lists them).
"""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from device.app import EXIT_OK, EXIT_USAGE, App, StartError

log = logging.getLogger("device.app")  # one logger name for the player, as before the split


def add_parser(subparsers: Any) -> None:
    from device.state.commands import MODES

    p = subparsers.add_parser(
        "play", help="play the instrument",
        description="Play the instrument: ALSA in and out, nanoKONTROL2, OLED, buttons. "
                    "With no arguments: models/default, ALSA 'default', line-in; on a "
                    "desktop with no sound card it plays into ALSA's null device (warning). "
                    "A device, display or buttons named here or in the config work or are "
                    "an error. Paths are relative to the current directory; paths in the "
                    "config file relative to that file.",
        epilog="exit codes: 0 stopped, 1 failed while running, 2 bad arguments or config, "
               "3 no model, 4 a named sound card did not open (or the default, with [audio] "
               "fallback = \"fail\")")
    p.add_argument("--config", metavar="FILE.toml", help="configuration file "
                   "(deploy/aesynth.toml documents every key)")
    p.add_argument("--model", metavar="PATH", help="a bundle to play (directory or .zip)")
    p.add_argument("--mode", choices=MODES, help="start in this mode")
    p.add_argument("--in", dest="input", metavar="FILE|line|none",
                   help="input: line-in, none, or an audio file to loop")
    p.add_argument("--output-device", metavar="ALSA_PCM",
                   help="playback PCM, e.g. plughw:CARD=Device, null, or out.wav to record "
                        "into a WAV file")
    p.add_argument("--capture-device", metavar="ALSA_PCM", help="capture PCM for line-in")
    p.add_argument("--display", choices=("ssd1306", "sh1106", "terminal", "emulator", "dummy",
                                         "none"),
                   help="where the unit table is drawn (dummy: rendered, not shown)")
    p.add_argument("--no-midi", action="store_true", help="do not look for a controller")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop after this long (exit 0)")
    p.set_defaults(func=run_play)


def config_from_args(args: argparse.Namespace) -> Any:
    """The config file (paths in it relative to it) overlaid with the arguments (paths
    relative to the current directory)."""
    from device.state.config import is_wav_path, load_config
    from device.state.paths import typed

    cfg = load_config(args.config)
    if args.model:
        cfg = cfg.replace("model", path=str(typed(args.model)))
    if args.mode:
        cfg = cfg.replace("play", mode=args.mode)
    if args.input:
        value = args.input if args.input in ("line", "none") else str(typed(args.input))
        cfg = cfg.replace("play", input=value)
    if args.output_device:
        device = args.output_device
        if is_wav_path(device):
            device = str(typed(device))
        cfg = cfg.replace("audio", playback_device=device)
    if args.capture_device:
        cfg = cfg.replace("audio", capture_device=args.capture_device)
    if args.display:
        cfg = cfg.replace("display", kind=args.display)
    if args.no_midi:
        cfg = cfg.replace("midi", enabled=False)
    return cfg.validate()


def run_play(args: argparse.Namespace) -> int:
    from device.errors import ConfigError

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_USAGE
    if args.duration is not None and args.duration <= 0:
        log.error("--duration must be > 0 seconds, got %s", args.duration)
        return EXIT_USAGE
    app = App(cfg)
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda signum, frame: app.request_stop(EXIT_OK))
    try:
        try:
            app.start()
        except StartError as e:
            log.log(logging.ERROR if e.code else logging.INFO, "%s", e)  # 0: stopped on request
            app.close()
            return e.code
        code = app.wait(args.duration)
    finally:
        code = app.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
