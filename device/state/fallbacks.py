"""The one rule for fallbacks: what a person asked for by name works or is an error naming it.

Only what nobody named may fall back, with a warning and a word on the display:
ALSA's ``default`` playback device on a machine with no sound card plays into
the ``null`` device ("no sound card"), the ``default`` capture device becomes
silence ("no line-in"), ``auto`` display and buttons take what is there.  A
device, display kind, button kind, mapping or file given on the command line or
in a config file is used, or the app stops with a line naming it.
"""

from __future__ import annotations

DEFAULT_PCM = "default"


def named_device(pcm: str) -> bool:
    """True when the ALSA PCM ``pcm`` was asked for by name (anything but ``default``)."""
    return pcm.strip() != DEFAULT_PCM
