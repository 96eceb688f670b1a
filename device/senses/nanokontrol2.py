"""The controller map as data, and the pure logic that turns MIDI into commands.

No I/O here (style rule 3): :mod:`device.senses.midi` owns the ports and threads.

- :class:`ControllerMap` — which CC does what.  :data:`DEFAULT_MAP` is the
  paper's map for a Korg nanoKONTROL2 in its factory scene (section 4.1,
  ../shared/nanokontrol2.md).  Another controller is a TOML or JSON file with
  the same keys (:func:`load_mapping`).
- :class:`Surface` — one controller's state: soft takeover of faders and
  knobs, S-button hold timing, the LEDs it should show.
- Korg SysEx: the scene dump request, 7-bit (un)packing, and the scene
  with the LED mode byte set to "external" so the host drives the LEDs.

Choices where the paper is silent, or where we add to it:
- Rewind / Fast-forward step the mode backward / forward through
  original → resynth → generate.  Between original and resynth this is the
  paper's "switch between original and synthesized audio"; stepping also
  reaches generate, the paper's "no input mode", without the GPIO button.
- Marker ◀ / ▶ step to the previous / next model; Marker Set is the
  paper's Set (every unit's output to 0, ZeroAll), on press.
- S n: released before ``preset_hold_s`` recalls preset slot n (1-based),
  held at least that long saves the current controls into slot n.
- R1 records the output to WAV.  Motion (device.state.modulation):
  R2 held is the LFO shift: while it is down, fader n sets the LFO depth of
  the page's unit n (0..1), knob n its rate (0.05..20 Hz, logarithmic) and
  M n steps its shape (sine → triangle → square → saw → random); faders and
  knobs must pick their units up again after R2 is released.  R3 records a
  motion take (press again: it loops), R4 loops the take or stops it.
  R8 starts MIDI learn, and ends it (device.senses.learn).  R5..R7: free.
  Cycle posts Shutdown; the app asks for a confirm.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.state import commands as c
from device.state.atomic import loads_strict
from device.state.commands import MODES, UNITS_PER_PAGE
from device.state.controls import ECHO_S, GAIN_RANGE, SCALE_RANGE, ControlsSnapshot
from device.errors import ConfigError

# Every action a button may name in a map, and the command it posts.
ACTIONS: dict[str, object] = {
    "page_prev": c.PageBy(-1),
    "page_next": c.PageBy(1),
    "shutdown": c.Shutdown(),
    "zero_all": c.ZeroAll(),
    "reset_all": c.ResetAll(),
    "mode_prev": c.StepMode(-1),
    "mode_next": c.StepMode(1),
    "mode_original": c.SetMode("original"),
    "mode_resynth": c.SetMode("resynth"),
    "mode_generate": c.SetMode("generate"),
    "stop": c.Stop(),
    "play_pause": c.PlayPause(),
    "model_prev": c.StepModel(-1),
    "model_next": c.StepModel(1),
    "record": c.ToggleRecording(),
    "motion_record": c.ToggleMotionRecord(),
    "motion_loop": c.ToggleMotionLoop(),
}
# Buttons that change what the strips do while held, rather than post a command.
MODIFIERS = ("lfo_shift", "learn")
LFO_KNOB_HZ = (0.05, 20.0)  # knob 0 → 127 under the LFO shift, logarithmic
# What an LED may show: play state, or the current mode.
LED_STATES = ("playing", "paused", *MODES)
# Commands after which the physical faders and knobs no longer match the units.
_RELEASING = (c.ZeroAll, c.ResetAll, c.RecallPreset, c.StepModel)
# A unit whose value differs from what its control last set, this long after, was
# changed by someone else (keyboard, preset from the app): its control must pick up
# again.  Longer than the audio thread takes to apply a command (one hop).
SETTLE_S = 0.5


@dataclass(frozen=True)
class ControllerMap:
    """Which control change does what; CC numbers 0..127, ``channel`` 1..16 or 0 for any."""
    name: str = "nanoKONTROL2"
    port: str = "nanoKONTROL2"                 # matched as a substring of the port name
    channel: int = 1
    faders: tuple[int, ...] = tuple(range(0, 8))     # gain of the page's unit n
    knobs: tuple[int, ...] = tuple(range(16, 24))    # scale of the page's unit n
    mutes: tuple[int, ...] = tuple(range(48, 56))    # mute toggle (and its LED)
    presets: tuple[int, ...] = tuple(range(32, 40))  # recall slot n, hold to save
    buttons: Mapping[str, int] = field(default_factory=lambda: {
        "page_prev": 58, "page_next": 59,            # Track ◀ ▶
        "shutdown": 46,                              # Cycle
        "zero_all": 60,                              # Marker Set
        "mode_prev": 43, "mode_next": 44,            # Rewind, Fast-forward
        "stop": 42, "play_pause": 41,
        "reset_all": 45,                             # Record
        "model_prev": 61, "model_next": 62,          # Marker ◀ ▶
        "record": 64,                                # R1: record the output to WAV
        "lfo_shift": 65,                             # R2 held: strips set LFOs
        "motion_record": 66, "motion_loop": 67,      # R3, R4: the motion recorder
        "learn": 71,                                 # R8: MIDI learn on / off (saves)
    })
    leds: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: {
        "playing": (41,), "paused": (42,),
        "original": (43,), "resynth": (44,), "generate": (43, 44),
    })
    mute_leds: bool = True
    korg_led_sysex: bool = True     # put a nanoKONTROL2 into external LED mode
    pickup: int = 2                 # soft takeover window, in CC steps
    preset_hold_s: float = 1.0

    def __post_init__(self) -> None:
        _check_map(self)

    def button_actions(self) -> dict[int, str]:
        """CC → action name."""
        return {cc: action for action, cc in self.buttons.items()}


def _fail(key: str, allowed: str, got: object) -> ConfigError:
    return ConfigError(f"controller map {key} must be {allowed}, got {got!r}")


def _check_cc(key: str, cc: object) -> None:
    if not isinstance(cc, int) or isinstance(cc, bool) or not 0 <= cc <= 127:
        raise _fail(key, "a CC number in 0..127", cc)


def _check_map(m: ControllerMap) -> None:
    if not isinstance(m.port, str) or not m.port:
        raise _fail("port", "a non-empty port name substring", m.port)
    if not isinstance(m.channel, int) or not 0 <= m.channel <= 16:
        raise _fail("channel", "1..16, or 0 for any", m.channel)
    used: dict[int, str] = {}
    for role in ("faders", "knobs", "mutes", "presets"):
        ccs = getattr(m, role)
        if len(ccs) > UNITS_PER_PAGE:
            raise _fail(role, f"at most {UNITS_PER_PAGE} CC numbers", list(ccs))
        for i, cc in enumerate(ccs):
            _check_cc(f"{role}[{i}]", cc)
            if cc in used:
                raise _fail(f"{role}[{i}]", f"a CC not already used by {used[cc]}", cc)
            used[cc] = f"{role}[{i}]"
    for action, cc in m.buttons.items():
        if action not in ACTIONS and action not in MODIFIERS:
            raise _fail(f"buttons.{action}", f"one of {', '.join((*ACTIONS, *MODIFIERS))}",
                        action)
        _check_cc(f"buttons.{action}", cc)
        if cc in used:
            raise _fail(f"buttons.{action}", f"a CC not already used by {used[cc]}", cc)
        used[cc] = f"buttons.{action}"
    for what, ccs in m.leds.items():
        if what not in LED_STATES:
            raise _fail(f"leds.{what}", f"one of {', '.join(LED_STATES)}", what)
        for cc in ccs:
            _check_cc(f"leds.{what}", cc)
    if not isinstance(m.pickup, int) or not 0 <= m.pickup <= 127:
        raise _fail("pickup", "0..127 CC steps", m.pickup)
    if not isinstance(m.preset_hold_s, int | float) or not 0 < m.preset_hold_s <= 10:
        raise _fail("preset_hold_s", "in (0, 10] seconds", m.preset_hold_s)


DEFAULT_MAP = ControllerMap()

_FIELDS = {"name", "port", "channel", "faders", "knobs", "mutes", "presets", "buttons", "leds",
           "mute_leds", "korg_led_sysex", "pickup", "preset_hold_s"}


def mapping_from_dict(data: Mapping[str, Any]) -> ControllerMap:
    """A :class:`ControllerMap` from parsed TOML/JSON; missing keys take the nanoKONTROL2's."""
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ConfigError(f"controller map has unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(_FIELDS))}")
    kw: dict[str, Any] = dict(data)
    for role in ("faders", "knobs", "mutes", "presets"):
        if role in kw:
            if not isinstance(kw[role], list | tuple):
                raise _fail(role, "a list of CC numbers", kw[role])
            kw[role] = tuple(kw[role])
    if "buttons" in kw and not isinstance(kw["buttons"], Mapping):
        raise _fail("buttons", "a table of action = CC", kw["buttons"])
    if "leds" in kw:
        if not isinstance(kw["leds"], Mapping):
            raise _fail("leds", "a table of state = [CC, ...]", kw["leds"])
        kw["leds"] = {k: tuple(v) if isinstance(v, list | tuple) else (v,)
                      for k, v in kw["leds"].items()}
    return ControllerMap(**kw)


def load_mapping(path: str | Path) -> ControllerMap:
    """Read a controller map from a ``.toml`` or ``.json`` file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"controller map {str(p)!r} cannot be read: {exc}") from exc
    try:
        if p.suffix.lower() == ".json":
            data = loads_strict(raw)  # NaN and Infinity are not JSON
        elif p.suffix.lower() == ".toml":
            data = tomllib.loads(raw.decode())
        else:
            raise ConfigError(f"controller map {str(p)!r} must end in .toml or .json")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, TOMLDecodeError, bad UTF-8
        raise ConfigError(f"controller map {str(p)!r} does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"controller map {str(p)!r} must hold a table, got {type(data)}")
    try:
        return mapping_from_dict(data)
    except (TypeError, ConfigError) as exc:
        raise ConfigError(f"controller map {str(p)!r}: {exc}") from exc


# -- knob travel: the detent at CC 64 is the middle of the range, exactly ------------------------

KNOB_CENTRE = 64  # CC value at a knob's centre detent (0..127 has no middle value)


def knob_travel(value: int) -> float:
    """CC 0..127 → 0..1 with CC 64 → exactly 0.5: two straight pieces, 0..64 and 64..127
    (value / 127 puts the detent at 0.504: a scale of 1.01 and an LFO at 1.03 Hz)."""
    if value <= KNOB_CENTRE:
        return 0.5 * value / KNOB_CENTRE
    return 0.5 + 0.5 * (value - KNOB_CENTRE) / (127 - KNOB_CENTRE)


def knob_position(travel: float) -> float:
    """Inverse of :func:`knob_travel` as a fraction of the CC range (0..1), for pick-up."""
    t = min(max(travel, 0.0), 1.0)
    cc = 2 * t * KNOB_CENTRE if t <= 0.5 else KNOB_CENTRE + (2 * t - 1) * (127 - KNOB_CENTRE)
    return cc / 127


# -- soft takeover ---------------------------------------------------------------------------

class Pickup:
    """Soft takeover: a control drives its unit only once it has met the unit's value.

    A fader that was left at 0.2 must not make a unit at 0.9 jump on the
    first touch.  It takes over once its position comes within ``window``
    (a fraction of the range) of the unit's value, or crosses it between two
    messages; it stays engaged until :meth:`release` (page change, reset,
    preset, model change).
    """

    def __init__(self, window: float):
        self.window = window
        self._engaged: set[tuple[str, int]] = set()     # (kind, unit)
        self._position: dict[tuple[str, int], float] = {}  # (kind, strip) → last position

    def move(self, kind: str, strip: int, unit: int, position: float, current: float) -> bool:
        """Record a move to ``position`` (0..1); True when it should take effect."""
        last = self._position.get((kind, strip))
        self._position[(kind, strip)] = position
        key = (kind, unit)
        if key in self._engaged:
            return True
        crossed = last is not None and (last - current) * (position - current) <= 0
        if crossed or abs(position - current) <= self.window:
            self._engaged.add(key)
            return True
        return False

    def release(self) -> None:
        self._engaged.clear()

    def release_unit(self, kind: str, unit: int) -> None:
        self._engaged.discard((kind, unit))

    def engaged(self, kind: str, unit: int) -> bool:
        return (kind, unit) in self._engaged

    def position(self, kind: str, strip: int) -> float | None:
        """Where strip ``strip``'s control of ``kind`` was last seen (0..1), or None."""
        return self._position.get((kind, strip))


# -- the surface: messages in, commands out --------------------------------------------------

class Surface:
    """One controller's state; :meth:`handle` turns a MIDI message into commands.

    Pure: the caller passes the current controls and the time.  Not thread
    safe; :class:`device.senses.midi.MidiController` calls it from one thread.
    """

    def __init__(self, mapping: ControllerMap = DEFAULT_MAP):
        self.mapping = mapping
        self.pickup = Pickup(mapping.pickup / 127)
        self._faders = {cc: i for i, cc in enumerate(mapping.faders)}
        self._knobs = {cc: i for i, cc in enumerate(mapping.knobs)}
        self._mutes = {cc: i for i, cc in enumerate(mapping.mutes)}
        self._presets = {cc: i for i, cc in enumerate(mapping.presets)}
        self._buttons = mapping.button_actions()
        self._down: dict[int, float] = {}    # CC of a pressed button → press time
        self._sent: dict[tuple[str, int], tuple[float, float]] = {}  # → (position, time)
        self._view: tuple[int, int] | None = None  # (units, page) last seen
        self._page_asked: tuple[int, float] | None = None  # Track ◀/▶: (page, when)
        self.on_channel = False               # a CC came on the mapping's channel
        self.off_channel: int | None = None   # 1..16: CCs came on this channel, none on ours

    def release(self) -> None:
        """Forget takeover: after a model change, preset or anything that moved the units."""
        self.pickup.release()

    def forget(self) -> None:
        """Forget every gesture and takeover: a new connection starts with no button down,
        so a hold begun before an unplug can never end as a save after it."""
        self._down.clear()
        self._sent.clear()
        self._page_asked = None
        self.pickup = Pickup(self.pickup.window)  # no last positions either
        self.on_channel, self.off_channel = False, None

    def handle(self, msg: Any, controls: ControlsSnapshot, now: float) -> list[object]:
        """Commands for one mido message (empty when it means nothing to us)."""
        if getattr(msg, "type", None) != "control_change":
            return []
        if self.mapping.channel and msg.channel != self.mapping.channel - 1:
            if not self.on_channel:
                self.off_channel = msg.channel + 1
            return []
        self.on_channel = True
        cc, value = msg.control, msg.value
        page = self._page(controls, now)
        if page != controls.page:  # the strips address the page asked for (ECHO_S)
            controls = dataclasses.replace(controls, page=page)
        view = (controls.units, controls.page)
        if view != self._view:  # the strips now address other units
            self._view = view
            self.pickup.release()
        out: list[object] = []
        if self._buttons.get(cc) == "lfo_shift":
            if value >= 64:
                self._down[cc] = now
            elif self._down.pop(cc, None) is not None:
                self.pickup.release()  # the faders and knobs moved under the shift
            return []
        if self.lfo_shift:
            lfo = self._lfo(cc, value, value >= 64, controls)
            if lfo is not None:
                return lfo
        if cc in self._faders:
            unit = controls.page * UNITS_PER_PAGE + self._faders[cc]
            if unit < controls.units and self._move(
                    "gain", self._faders[cc], unit, value,
                    controls.gain[unit] / GAIN_RANGE[1], now):
                out.append(c.SetGain(unit, GAIN_RANGE[1] * value / 127))
        elif cc in self._knobs:
            unit = controls.page * UNITS_PER_PAGE + self._knobs[cc]
            if unit < controls.units and self._move(
                    "scale", self._knobs[cc], unit, value,
                    knob_position(controls.scale[unit] / SCALE_RANGE[1]), now):
                out.append(c.SetScale(unit, SCALE_RANGE[1] * knob_travel(value)))
        else:
            out = self._button(cc, value >= 64, controls, now)
        if any(isinstance(cmd, _RELEASING) for cmd in out):
            self.pickup.release()
        for cmd in out:
            if isinstance(cmd, c.PageBy) and controls.pages:
                self._page_asked = ((controls.page + cmd.delta) % controls.pages, now)
        return out

    def _page(self, controls: ControlsSnapshot, now: float) -> int:
        """The page the strips address: the one a Track button asked for until the
        published controls show it or ECHO_S passes, else the published one."""
        if self._page_asked is not None:
            page, when = self._page_asked
            if page != controls.page and now - when < ECHO_S and page < controls.pages:
                return page
            self._page_asked = None
        return controls.page

    @property
    def lfo_shift(self) -> bool:
        """The LFO shift button (R2) is held."""
        return any(self._buttons.get(cc) == "lfo_shift" for cc in self._down)

    def _lfo(self, cc: int, value: int, pressed: bool,
             controls: ControlsSnapshot) -> list[object] | None:
        """Under the LFO shift: fader → depth, knob → rate, M → next shape; None when ``cc``
        is none of these (it then does what it always does)."""
        start = controls.page * UNITS_PER_PAGE
        if cc in self._faders:
            unit = start + self._faders[cc]
            return [c.SetLfoDepth(unit, value / 127)] if unit < controls.units else []
        if cc in self._knobs:
            unit = start + self._knobs[cc]
            lo, hi = LFO_KNOB_HZ
            hz = lo * math.exp(math.log(hi / lo) * knob_travel(value))  # CC 64: 1 Hz
            return [c.SetLfoRate(unit, min(max(hz, lo), hi))] if unit < controls.units else []
        if cc in self._mutes:
            if not pressed:
                self._down.pop(cc, None)
                return []
            self._down[cc] = 0.0
            unit = start + self._mutes[cc]
            return [c.StepLfoShape(unit, 1)] if unit < controls.units else []
        return None

    def _move(self, kind: str, strip: int, unit: int, value: int, current: float,
              now: float) -> bool:
        key = (kind, unit)
        sent = self._sent.get(key)
        if (sent is not None and self.pickup.engaged(kind, unit)
                and abs(sent[0] - current) > self.pickup.window and now - sent[1] > SETTLE_S):
            self.pickup.release_unit(kind, unit)  # changed behind our back
        if not self.pickup.move(kind, strip, unit, value / 127, current):
            return False
        self._sent[key] = (value / 127, now)
        return True

    def _button(self, cc: int, pressed: bool, controls: ControlsSnapshot,
                now: float) -> list[object]:
        was_down = cc in self._down
        if pressed:
            if was_down:      # a repeated press without release: act once
                return []
            self._down[cc] = now
        else:
            if not was_down:  # a release we never saw pressed
                return []
            pressed_at = self._down.pop(cc)
        if cc in self._presets:
            if pressed:
                return []     # decided on release: short = recall, long = save
            slot = self._presets[cc] + 1
            if now - pressed_at >= self.mapping.preset_hold_s:
                return [c.SavePreset(slot)]
            return [c.RecallPreset(slot)]
        if not pressed:
            return []
        if cc in self._mutes:
            unit = controls.page * UNITS_PER_PAGE + self._mutes[cc]
            return [c.ToggleMute(unit)] if unit < controls.units else []
        action = self._buttons.get(cc)
        if action == "learn":
            return [c.ToggleLearn()]
        return [ACTIONS[action]] if action in ACTIONS else []

    def pickup_hints(self, controls: ControlsSnapshot) -> tuple[str, ...]:
        """Per unit of the page, two characters: which way its fader, then its knob, must
        move to pick the unit up ("^" up, "v" down), blank once picked up or never moved."""
        start = controls.page * UNITS_PER_PAGE
        hints = []
        for i in range(min(UNITS_PER_PAGE, controls.units - start)):
            u = start + i
            gain = self._hint("gain", i, u, controls.gain[u] / GAIN_RANGE[1],
                              i < len(self.mapping.faders))
            scale = self._hint("scale", i, u, knob_position(controls.scale[u] / SCALE_RANGE[1]),
                               i < len(self.mapping.knobs))
            hints.append(gain + scale)
        return tuple(hints)

    def _hint(self, kind: str, strip: int, unit: int, target: float, exists: bool) -> str:
        position = self.pickup.position(kind, strip)
        if (not exists or position is None or self.pickup.engaged(kind, unit)
                or abs(position - target) <= self.pickup.window):
            return " "
        return "^" if position < target else "v"

    def leds(self, controls: ControlsSnapshot, mode: str, playing: bool) -> dict[int, bool]:
        """CC → lit, for every LED this map drives."""
        m = self.mapping
        lit: dict[int, bool] = {}
        for ccs in m.leds.values():
            for cc in ccs:
                lit.setdefault(cc, False)
        on = [mode, "playing" if playing else "paused"]
        for what in on:
            for cc in m.leds.get(what, ()):
                lit[cc] = True
        if m.mute_leds:
            start = controls.page * UNITS_PER_PAGE
            for i, cc in enumerate(m.mutes):
                u = start + i
                lit[cc] = u < controls.units and controls.muted[u]
        return lit


# -- Korg SysEx: external LED mode --------------------------------------------------------------

KORG = 0x42
SCENE_BYTES = 339            # unpacked scene data
PACKED_SCENE_BYTES = 388     # 7-bit packed
LED_MODE_OFFSET = 2          # in the unpacked scene: 0 internal, 1 external
_FAMILY = (0x00, 0x01, 0x13, 0x00)   # nanoKONTROL2 "software project" header


def scene_request(channel: int = 0) -> list[int]:
    """SysEx data (without F0/F7) asking for the current scene; ``channel`` 0..15."""
    return [KORG, 0x40 | channel, *_FAMILY, 0x1F, 0x10, 0x00]


def scene_dump(scene: bytes | bytearray | list[int], channel: int = 0) -> list[int]:
    """SysEx data (without F0/F7) sending ``scene`` (339 bytes) to the current scene."""
    return [KORG, 0x40 | channel, *_FAMILY, 0x7F, 0x7F, 0x02, 0x03, 0x05, 0x40, *pack7(scene)]


def pack7(data: bytes | bytearray | list[int]) -> list[int]:
    """Korg 7-bit packing: per 7 bytes, one byte of their top bits (bit i ↔ byte i), then
    their low 7 bits."""
    out: list[int] = []
    for start in range(0, len(data), 7):
        group = data[start:start + 7]
        out.append(sum(((b >> 7) & 1) << i for i, b in enumerate(group)))
        out.extend(b & 0x7F for b in group)
    return out


def unpack7(packed: bytes | bytearray | list[int]) -> bytes:
    """Inverse of :func:`pack7`."""
    out = bytearray()
    for start in range(0, len(packed), 8):
        top, *group = packed[start:start + 8]
        out.extend((b & 0x7F) | (((top >> i) & 1) << 7) for i, b in enumerate(group))
    return bytes(out)


def parse_korg(data: Iterable[int]) -> tuple[str, bytes | None]:
    """Classify SysEx data from the controller: ("scene", 339 bytes), ("ack"|"nak", None),
    or ("other", None)."""
    d = list(data)
    if len(d) < 7 or d[0] != KORG or (d[1] & 0xF0) != 0x40 or tuple(d[2:6]) != _FAMILY:
        return "other", None
    body = d[6:]
    if body[:2] == [0x5F, 0x23]:
        return "ack", None
    if body[:2] == [0x5F, 0x24]:
        return "nak", None
    if body[:6] == [0x7F, 0x7F, 0x02, 0x03, 0x05, 0x40] and len(body) == 6 + PACKED_SCENE_BYTES:
        return "scene", unpack7(body[6:])
    return "other", None


def with_led_mode(scene: bytes, external: bool) -> bytes:
    """``scene`` with its LED mode byte set (1 external, 0 internal)."""
    if len(scene) != SCENE_BYTES:
        raise ConfigError(f"nanoKONTROL2 scene must be {SCENE_BYTES} bytes, got {len(scene)}")
    b = bytearray(scene)
    b[LED_MODE_OFFSET] = 1 if external else 0
    return bytes(b)
