"""Power the box off cleanly from the controller ([play] quit = "poweroff").

The player runs unprivileged (no capabilities, NoNewPrivileges): it cannot shut
the machine down itself.  It writes a request file in its runtime directory
(/run/aesynth, in RAM); ``aesynth-poweroff.path`` (PathExists=) starts
``aesynth-poweroff.service``, which runs ``systemctl poweroff``: systemd then
stops the player like any service (SIGTERM, a clean exit) and halts the Pi,
so the SD card is never cut off mid-write.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from device.state.health import runtime_dir

log = logging.getLogger(__name__)

REQUEST_NAME = "poweroff"


def request_poweroff(directory: Path | None = None) -> str:
    """Ask systemd to power off; returns the line for the display.  Never raises: a failed
    request is logged and said on the display, and the music plays on."""
    path = (directory or runtime_dir()) / REQUEST_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n")
    except OSError as e:
        log.error("cannot ask for a power off: %s: %s", path, e.strerror or e)
        return "cannot power off"
    if not os.environ.get("INVOCATION_ID"):  # not started by systemd: no one acts on it
        log.warning("power off requested (%s), but aesynth is not running under systemd "
                    "(aesynth-poweroff.path acts on it on the card)", path)
    else:
        log.warning("power off requested (%s): systemd stops aesynth, then the box", path)
    return "powering off"
