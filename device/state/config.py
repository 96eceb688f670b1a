"""`aesynth play` configuration: a TOML file over defaults that work with no file at all.

Every key has a default (see deploy/aesynth.toml, the documented example the
box installs as /etc/aesynth/config.toml).  Unknown sections or keys and values
of the wrong type are errors that name the key, what is allowed and what was
found, so a typo never silently selects a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.state.commands import MODES
from device.errors import ConfigError
from device.state.paths import INSTALL_DIR, resolve

USER_MODELS_ENV = "AESYNTH_MODELS_DIR"
DEFAULT_USER_DIR = "~/.local/share/aesynth/models"
DISPLAYS = ("auto", "ssd1306", "sh1106", "terminal", "emulator", "dummy", "none")
BUTTONS = ("auto", "gpio", "keyboard", "none")
FALLBACKS = ("null", "fail")
QUITS = ("exit", "poweroff")


@dataclass(frozen=True)
class ModelSection:
    path: str = ""            # a bundle to play; "" = the library's current model
    shipped_dir: str = ""     # "" = <install>/models
    user_dir: str = ""        # "" = $AESYNTH_MODELS_DIR, else DEFAULT_USER_DIR (user_models_dir)
    state_file: str = "~/.local/state/aesynth/state.json"
    phase: str = "rtpghi"
    num_threads: int = 1


@dataclass(frozen=True)
class PlaySection:
    mode: str = "resynth"
    input: str = "line"       # "line", "none", or an audio file to loop
    # What Cycle twice (or q) does: "exit" ends the program (exit 0); "poweroff" asks systemd
    # to shut the box down cleanly (the card: a box without a keyboard has no other way).
    quit: str = "exit"


@dataclass(frozen=True)
class AudioSection:
    """[audio]: device.sound.audio.AudioConfig's keys (checked by it at load) plus the app's own."""

    playback_device: str = "default"
    capture_device: str = "default"
    # "safe" (4 periods, prefill 2) or "low" (3 periods, prefill 1; with an asymmetric
    # frame the model plays at hop 64, synthesis 128: device.sound.profiles).
    profile: str = "safe"
    periods: int = 0          # 0: the profile's
    prefill: int = 0          # 0: the profile's
    period: int = 0           # frames asked of the card; 0: one hop at the card's rate
    sample_format: str = "FLOAT_LE"
    pacing: str = "auto"
    realtime: bool = True
    priority: int = 70
    retry_s: float = 0.1
    retry_max_s: float = 2.0
    # When ALSA's "default" playback device cannot be opened at start: "null" keeps playing
    # into ALSA's null device paced by the clock (a desktop without a sound
    # card), "fail" exits with EXIT_AUDIO so a supervisor retries.
    fallback: str = "null"
    # Python's GIL switch interval while playing: the audio thread, back from a
    # blocking ALSA write, waits at most this long for a busy thread to let go.
    switch_interval_ms: float = 1.0
    # SCHED_FIFO priority for the app's other threads (MIDI, display, control) when
    # realtime is on, below `priority`: a thread holding the GIL must not be preempted by
    # an ordinary process while the audio thread waits for it.  0: normal priority.
    others_priority: int = 10
    # Where the engine and the audio loop run: "thread" (a thread of the app), "own" (a
    # process of their own, device/sound/audio_child.py: no other thread of the app can then
    # hold the audio thread's GIL; measured in docs/play.md) or "auto" (own at the low
    # profile, whose 2.9 ms hop has no room for a GIL wait; a thread at the safe one).
    process: str = "auto"

    @property
    def own_process(self) -> bool:
        """Whether ``process`` puts the engine in a process of its own."""
        return self.process == "own" or (self.process == "auto" and self.profile == "low")

    def audio_config(self, **changes: Any) -> Any:
        """The :class:`device.sound.audio.AudioConfig` these keys describe (``changes`` override);
        raises ConfigError naming the key, the allowed values and the value found."""
        from device.sound.audio import AudioConfig  # numpy only when audio is configured
        from device.errors import DeviceError

        keys = {f.name for f in dataclasses.fields(AudioConfig)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in keys
                  and not (k in ("periods", "prefill") and v == 0)}  # 0: the profile's
        try:
            return AudioConfig(**{**values, **changes})
        except DeviceError as e:
            raise ConfigError(str(e)) from None


@dataclass(frozen=True)
class MidiSection:
    enabled: bool = True
    port_match: str = ""      # a substring of the MIDI port name; "" = the mapping's port
    mapping: str = ""         # a mapping file for another controller; "" = the paper's map


@dataclass(frozen=True)
class NotesSection:
    """[notes]: USB-MIDI keyboards playing generate mode (device.senses.notes, device.sound.pitch)."""
    enabled: bool = True
    port_match: str = ""      # "" = every MIDI input that is not the controller
    reference_note: int = 60  # the note that plays the spectrum untransposed
    attack_s: float = 0.01
    release_s: float = 0.25


@dataclass(frozen=True)
class DisplaySection:
    kind: str = "auto"        # auto: ssd1306 when /dev/i2c-<port> exists, else terminal/none
    i2c_port: int = 1
    i2c_address: int = 0x3C
    max_fps: float = 30.0     # (0, 120], as device.senses.display.Display accepts
    rotate: int = 0           # quarter turns, 0..3
    column_offset: int = 2    # SH1106 only: its first visible column of 132, 0..4


@dataclass(frozen=True)
class ButtonsSection:
    kind: str = "auto"        # auto: GPIO when gpiozero finds pins, else keyboard on a tty
    mode_pin: int = 17
    model_pin: int = 27
    bounce_time: float = 0.05
    hold_time: float = 1.0


@dataclass(frozen=True)
class StorageSection:
    presets_dir: str = "~/.local/share/aesynth/presets"
    recordings_dir: str = "~/.local/share/aesynth/recordings"
    # Where USB sticks are mounted (each mount point in it is a stick): their bundles are
    # imported into [model] user_dir.  "" = no watcher.
    usb_mount_root: str = ""


@dataclass(frozen=True)
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    play: PlaySection = field(default_factory=PlaySection)
    audio: AudioSection = field(default_factory=AudioSection)
    midi: MidiSection = field(default_factory=MidiSection)
    notes: NotesSection = field(default_factory=NotesSection)
    display: DisplaySection = field(default_factory=DisplaySection)
    buttons: ButtonsSection = field(default_factory=ButtonsSection)
    storage: StorageSection = field(default_factory=StorageSection)

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (checked like the file)."""
        current = getattr(self, section)
        merged = {**dataclasses.asdict(current), **changes}
        return dataclasses.replace(self, **{section: _section(section, type(current), merged)})

    def validate(self) -> Config:
        _check_choice("play.mode", self.play.mode, MODES)
        _check_choice("play.quit", self.play.quit, QUITS)
        _check_choice("display.kind", self.display.kind, DISPLAYS)
        _check_choice("buttons.kind", self.buttons.kind, BUTTONS)
        _check_choice("audio.fallback", self.audio.fallback, FALLBACKS)
        if not 0 <= self.display.i2c_address <= 0x7F:
            raise ConfigError(f"display.i2c_address must be in 0x00..0x7f, got "
                              f"{self.display.i2c_address:#x}")
        if not 0 <= self.display.i2c_port <= 255:
            raise ConfigError(f"display.i2c_port must be in 0..255 (/dev/i2c-N), got "
                              f"{self.display.i2c_port}")
        if not 0 <= self.display.rotate <= 3:
            raise ConfigError(f"display.rotate must be in 0..3 quarter turns, got "
                              f"{self.display.rotate}")
        if not 0 <= self.display.column_offset <= 4:
            raise ConfigError(f"display.column_offset must be in 0..4 (the SH1106's first "
                              f"visible column of 132), got {self.display.column_offset}")
        if not 0 < self.display.max_fps <= 120:
            raise ConfigError(f"display.max_fps must be in (0, 120] frames a second, got "
                              f"{self.display.max_fps}")
        if not (isinstance(self.audio.others_priority, int)
                and 0 <= self.audio.others_priority < self.audio.priority):
            raise ConfigError(f"audio.others_priority must be in 0..priority-1="
                              f"{self.audio.priority - 1} (0: normal scheduling), got "
                              f"{self.audio.others_priority!r}")
        if self.audio.process not in ("auto", "thread", "own"):
            raise ConfigError(f"audio.process must be one of auto, thread, own, got "
                              f"{self.audio.process!r}")
        if not 0.1 <= self.audio.switch_interval_ms <= 10.0:
            raise ConfigError(f"audio.switch_interval_ms must be in 0.1..10 ms, got "
                              f"{self.audio.switch_interval_ms}")
        if not 1 <= self.model.num_threads <= 8:
            raise ConfigError(f"model.num_threads must be in 1..8, got {self.model.num_threads}")
        if self.buttons.bounce_time < 0 or self.buttons.hold_time <= 0:
            raise ConfigError(f"buttons.bounce_time must be >= 0 and hold_time > 0 seconds, got "
                              f"{self.buttons.bounce_time} and {self.buttons.hold_time}")
        if not 0 <= self.notes.reference_note <= 127:
            raise ConfigError(f"notes.reference_note must be in 0..127, got "
                              f"{self.notes.reference_note}")
        for key in ("attack_s", "release_s"):
            v = getattr(self.notes, key)
            if not 0.0 <= v <= 10.0:
                raise ConfigError(f"notes.{key} must be in 0..10 s, got {v}")
        self.audio.audio_config()  # the audio thread's own checks, now rather than at start
        return self


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


def _section(name: str, cls: type, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in [{name}]; allowed: "
                          f"{', '.join(fields)}")
    out = {}
    for key, value in values.items():
        want = type(getattr(cls(), key))
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(f"{name}.{key} must be {want.__name__}, got {value!r}")
        out[key] = value
    return cls(**out)


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Defaults, overlaid with the TOML file at ``path`` when given."""
    if path is None:
        return Config().validate()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {os.fspath(path)!r} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {os.fspath(path)!r} is not UTF-8 text: {e}") from None
    except OSError as e:  # a directory, no permission, an I/O error
        raise ConfigError(f"cannot read config file {os.fspath(path)!r}: "
                          f"{e.strerror or e}") from None
    cfg = config_from_dict(data, source=os.fspath(path))
    return relative_to(cfg, Path(os.path.abspath(path)).parent)


# Keys that hold a path (device/state/paths.py: a relative one in a file is relative to the
# file's folder); "" keeps its default, and a few words mean something else.
PATH_KEYS = {
    ("model", "path"): (), ("model", "shipped_dir"): (), ("model", "user_dir"): (),
    ("model", "state_file"): (), ("play", "input"): ("line", "none"),
    ("midi", "mapping"): (), ("storage", "presets_dir"): (),
    ("storage", "recordings_dir"): (), ("storage", "usb_mount_root"): (),
}


def relative_to(cfg: Config, base: str | os.PathLike) -> Config:
    """``cfg`` with every relative path key made absolute against the folder ``base`` (where
    the file that set it lives); ``~`` and absolute paths stay as written.  A WAV file as
    ``audio.playback_device`` is a path too."""
    changes: dict[str, dict[str, str]] = {}
    for (section, key), words in PATH_KEYS.items():
        value = getattr(getattr(cfg, section), key)
        if value and value not in words and not _absolute(value):
            changes.setdefault(section, {})[key] = str(resolve(value, base))
    device = cfg.audio.playback_device
    if is_wav_path(device) and not _absolute(device):
        changes.setdefault("audio", {})["playback_device"] = str(resolve(device, base))
    for section, values in changes.items():
        cfg = cfg.replace(section, **values)
    return cfg


def is_wav_path(device: str) -> bool:
    """An ALSA playback device given as a WAV file to record into (``out.wav``)."""
    return device.lower().endswith(".wav") and not device.startswith(("file:", "plug:"))


def _absolute(value: str) -> bool:
    return os.path.isabs(os.path.expandvars(os.path.expanduser(value)))


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(sections)}")
    built = {}
    for name, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{name}] must be a table, got {value!r}")
        cls = type(getattr(Config(), name))
        built[name] = _section(name, cls, value)
    return Config(**built).validate()


def user_models_dir(model: ModelSection | None = None) -> Path:
    """Where user models live, for ``play`` and ``import`` alike: ``[model] user_dir`` when
    set, else ``$AESYNTH_MODELS_DIR`` (relative to the current directory), else
    ``~/.local/share/aesynth/models``."""
    if model is not None and model.user_dir:
        return expand(model.user_dir)
    env = os.environ.get(USER_MODELS_ENV)
    return resolve(env, Path.cwd()) if env else expand(DEFAULT_USER_DIR)


def expand(path: str) -> Path:
    """~ and $VARS expanded; a path still relative is a built-in default (``models``),
    relative to the install directory: paths from a file or the command line are made
    absolute when read (:func:`relative_to`, device/state/paths.py)."""
    return resolve(path, INSTALL_DIR)
