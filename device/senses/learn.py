"""MIDI learn: the next moved control takes the selected function.  Pure, no I/O but
:func:`save_mapping`.

A learn session edits a copy of the current :class:`ControllerMap`.  Functions
come in a fixed order (:data:`FUNCTIONS`: fader 1..8, knob 1..8, mute 1..8,
preset 1..8, then every button action); the session starts at the first and
moves on after each assignment, so a controller is learnt by moving its
controls in that order (the keyboard's ``<`` / ``>`` skip back and forth).
The CC a function takes is removed from wherever else it was (the two swap
CCs, so the map stays complete and valid); a CC already learnt in this
session is ignored (a fader sends many values, a button a press and a
release).  The learnt map is saved in the mapping-file format
(:func:`device.senses.nanokontrol2.load_mapping` reads it back).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from device.senses.nanokontrol2 import ACTIONS, MODIFIERS, ControllerMap
from device.state.atomic import write_json_atomic
from device.state.commands import UNITS_PER_PAGE

LEARNED_PATH = "~/.local/share/aesynth/controller-learned.json"
_ROLES = (("faders", "fader"), ("knobs", "knob"), ("mutes", "mute"), ("presets", "preset"))
LEARN_ACTION = "learn"
# (role, index) for a strip; ("buttons", action) for a button
FUNCTIONS: tuple[tuple[str, int | str], ...] = (
    *((role, i) for role, _ in _ROLES for i in range(UNITS_PER_PAGE)),
    *(("buttons", a) for a in (*ACTIONS, *MODIFIERS)))


def function_label(function: tuple[str, int | str]) -> str:
    """"fader 3", "preset 1", "play_pause"."""
    role, which = function
    if role == "buttons":
        return str(which)
    return f"{dict(_ROLES)[role]} {int(which) + 1}"


class Learn:
    """One learn session over ``mapping`` (see the module docstring)."""

    def __init__(self, mapping: ControllerMap):
        self.mapping = mapping
        self.selected = 0
        self.learnt: dict[tuple[str, int | str], tuple[int, int]] = {}  # → (channel, cc)
        self._taken: set[tuple[int, int]] = set()

    @property
    def function(self) -> tuple[str, int | str]:
        return FUNCTIONS[self.selected]

    def prompt(self) -> str:
        return f"learn {function_label(self.function)}: move a control"

    def step(self, delta: int) -> str:
        self.selected = (self.selected + delta) % len(FUNCTIONS)
        return self.prompt()

    def offer(self, channel: int, cc: int) -> str | None:
        """A control change arrived (channel 0..15): what it now does, or None if ignored."""
        if (channel, cc) in self._taken:
            return None
        self._taken.add((channel, cc))
        function = self.function
        self.mapping = assign(self.mapping, function, cc)
        self.learnt[function] = (channel, cc)
        self.selected = (self.selected + 1) % len(FUNCTIONS)
        return f"{function_label(function)} = CC {cc}"

    def result(self) -> ControllerMap:
        """The learnt map: the channel of what was learnt (0, any, when they differ)."""
        channels = {ch for ch, _ in self.learnt.values()}
        channel = channels.pop() + 1 if len(channels) == 1 else (0 if channels else
                                                                 self.mapping.channel)
        return replace(self.mapping, channel=channel)


def _slots(m: ControllerMap) -> dict[tuple[str, int | str], int]:
    out: dict[tuple[str, int | str], int] = {}
    for role, _ in _ROLES:
        for i, cc in enumerate(getattr(m, role)):
            out[(role, i)] = cc
    for action, cc in m.buttons.items():
        out[("buttons", action)] = cc
    return out


def assign(m: ControllerMap, function: tuple[str, int | str], cc: int) -> ControllerMap:
    """``m`` with ``function`` on ``cc``; the function that had ``cc`` takes the old CC of
    ``function`` (or loses its CC when ``function`` had none: a button, or a strip past
    the end of its row)."""
    slots = _slots(m)
    old = slots.get(function)
    holder = next((f for f, v in slots.items() if v == cc and f != function), None)
    slots[function] = cc
    if holder is not None:
        if old is not None:
            slots[holder] = old
        else:
            del slots[holder]
    kw: dict[str, Any] = {}
    for role, _ in _ROLES:
        row: list[int] = []
        for i in range(UNITS_PER_PAGE):  # a row has no holes: it ends at the first gap
            if (role, i) not in slots:
                break
            row.append(slots[(role, i)])
        kw[role] = tuple(row)
    kw["buttons"] = {f[1]: v for f, v in slots.items() if f[0] == "buttons"}
    return replace(m, **kw)


def mapping_dict(m: ControllerMap) -> dict[str, Any]:
    """``m`` as the mapping file's keys (JSON types)."""
    return {"name": m.name, "port": m.port, "channel": m.channel, "faders": list(m.faders),
            "knobs": list(m.knobs), "mutes": list(m.mutes), "presets": list(m.presets),
            "buttons": dict(m.buttons), "leds": {k: list(v) for k, v in m.leds.items()},
            "mute_leds": m.mute_leds, "korg_led_sysex": m.korg_led_sysex, "pickup": m.pickup,
            "preset_hold_s": m.preset_hold_s}


def save_mapping(m: ControllerMap, path: str | os.PathLike = LEARNED_PATH) -> Path:
    """Write ``m`` as a JSON mapping file (atomically); the path written."""
    p = Path(os.path.expanduser(os.fspath(path)))
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(p, mapping_dict(m))
    return p
