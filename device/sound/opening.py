"""Opening the sound card, with the one fallback rule (device/state/fallbacks.py).

A device asked for by name opens or is an error naming it.  Only ALSA's
``default`` falls back: a ``default`` capture device that does not open makes
the input silence ("no line-in": generate mode still sounds), a ``default``
playback device that does not open plays into ALSA's ``null`` device paced by
the clock ("no sound card"), unless ``[audio] fallback = "fail"``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from device.errors import DeviceError
from device.state.fallbacks import named_device

log = logging.getLogger("device.app")

ATTEMPTS = 3  # capture, then playback, may each fall back once


def open_with_fallbacks(open_loop: Callable[[Any, Any], Any], audio_cfg: Any, source: Any,
                        silent: Any, *, fallback: str,
                        note: str | None = None) -> tuple[Any, str | None]:
    """``open_loop(audio_cfg, source)``, retried after each allowed fallback.

    ``audio_cfg`` is a device.sound.audio.AudioConfig; ``silent`` the source to
    play when the default capture device is missing.  Returns (the opened loop,
    the note for the display: ``note``, "no line-in" or "no sound card").
    Raises DeviceError naming the device (with the config key for a capture
    device asked for by name) when no fallback is allowed.
    """
    for _attempt in range(ATTEMPTS):
        try:
            return open_loop(audio_cfg, source), note
        except DeviceError as e:
            if getattr(e, "pcm_kind", "") == "capture":
                if named_device(audio_cfg.capture_device):
                    raise DeviceError(f"{e} (--capture-device / [audio] capture_device)"
                                      ) from None
                # With no card at all, "no sound card" has been said already.
                log.log(logging.INFO if note else logging.WARNING,
                        "%s; playing with no input (generate mode still sounds)", e)
                source = silent
                note = note or "no line-in"  # "no sound card" says more
            elif fallback == "null" and not named_device(audio_cfg.playback_device):
                log.warning("%s; no sound card? playing into ALSA's null device instead "
                            "(silent; --output-device out.wav records it, [audio] fallback = "
                            "\"fail\" exits instead)", e)
                audio_cfg = dataclasses.replace(audio_cfg, playback_device="null",
                                                pacing="clock")
                note = "no sound card"
            else:
                raise
    raise DeviceError("no audio device could be opened")
