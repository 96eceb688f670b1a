"""What the instrument keeps on disk, opened at start (``[storage]``).

- Presets and each model's last controls (device/state/presets.py): the playing
  model's last controls are applied to the engine before the audio thread owns
  it, and a keeper thread saves them as they change.
- Models on USB sticks mounted under ``usb_mount_root``, imported into the user
  models (device/models/library.py, :class:`~device.models.library.UsbWatcher`).
- The folders written into, checked at start rather than at the first press.
- Recordings: the audio thread's :class:`RecorderSlot` and its target, which
  records onto a mounted stick, else into ``recordings_dir``.

A part whose module is missing is a warning and left out, and a folder that
cannot be written is a warning and a message: the music plays on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from device.sound.recorder import RecorderSlot

log = logging.getLogger("device.app")  # the player's lines, as before they moved here


@dataclass
class Storage:
    """What :func:`open_storage` opened.

    ``presets`` (:class:`~device.state.presets.PresetStore`) and ``last_state``
    (:class:`~device.state.presets.LastStateKeeper`): None without the presets module.
    ``usb`` (:class:`~device.models.library.UsbWatcher`): None with no mount root or no
    library.  ``recorder``: the audio thread's slot; its ``target`` is None without a
    recorder.
    """

    presets: Any = None
    last_state: Any = None
    usb: Any = None
    recorder: RecorderSlot = field(default_factory=RecorderSlot)


def open_storage(config: Any, engine: Any, *, sample_rate: int, library: Any = None,
                 audio_process: Any = None, say: Callable[[str], None],
                 started: Callable[[Any], None]) -> Storage:
    """Presets and the last controls, the USB stick watcher, the folders and the recorder.

    ``config`` is the app's :class:`~device.state.config.Config` (``[storage]`` and
    ``[model]`` are read).  ``engine`` is the engine, or the stand-in for the audio
    process, before the audio thread owns it: its snapshot names the model, and the
    model's last controls are applied to it.  ``sample_rate`` (Hz) is the recorder's.
    Sticks are watched only with a ``library`` (None: ``[model] path`` was given).  With
    an ``audio_process`` (device.sound.remote.AudioProcess) the recorder is the one
    there.  ``say(text)`` puts a line on the display: an import's outcome and progress, a
    folder that cannot be written, a preset file or recording that failed (any thread).
    ``started(part)`` gets each part that runs a thread (the last-state keeper, the USB
    watcher) as soon as it runs: the caller closes them, also when a later step raises.
    """
    from device.state.config import expand, user_models_dir

    s = config.storage
    storage = Storage()
    try:
        from device.state.presets import LastStateKeeper, PresetStore, commands_for

        storage.presets = PresetStore(expand(s.presets_dir), report=say)
        snap = engine.snapshot
        last = storage.presets.load_last(snap.model, units=snap.controls.units)
        if last is not None:  # the audio thread is not running yet: apply here
            for cmd in commands_for(last, snap.controls):
                engine.apply(cmd)
            log.info("restored the last controls of %s", snap.model)
        storage.last_state = LastStateKeeper(storage.presets)
        started(storage.last_state)
    except ModuleNotFoundError as e:
        log.warning("no presets: %s", e)
    if s.usb_mount_root and library is not None:
        from device.models.library import UsbWatcher

        storage.usb = UsbWatcher(expand(s.usb_mount_root), lambda report: say(report.summary()),
                                 user_models_dir(config.model),
                                 on_progress=lambda progress: say(progress.short())).start()
        started(storage.usb)
    check_folders(config, say=say)
    try:
        from device.sound.recorder import Recorder, recording_dir

        fallback = expand(s.recordings_dir)
        usb = storage.usb
        # Asked at each start: onto a stick mounted by then, else the data partition.
        folder = (fallback if usb is None
                  else lambda: recording_dir(usb.current_stick, fallback))
        if audio_process is not None:  # the audio thread and its tap are there
            from device.sound.remote import RemoteRecorder

            storage.recorder.target = RemoteRecorder(audio_process, folder)
        else:
            storage.recorder.target = Recorder(folder, sample_rate, on_error=say)
    except ModuleNotFoundError as e:
        log.warning("no recorder: %s", e)
    return storage


def check_folders(config: Any, *, say: Callable[[str], None]) -> dict[str, str]:
    """The folders the app writes into, checked now rather than at the first press.

    For each that cannot be written (``[storage] presets_dir`` and ``recordings_dir``,
    ``[model] state_file``'s folder), one warning line in the log and
    ``say("cannot write KEY")``: the music plays on, and saving there fails, with one
    line, until it is fixed.  Returns {what names the folder: why} for those.
    """
    from device.state.config import expand
    from device.state.paths import unwritable

    s = config.storage
    bad = unwritable({
        "[storage] presets_dir": expand(s.presets_dir),
        "[storage] recordings_dir": expand(s.recordings_dir),
        "[model] state_file's folder": expand(config.model.state_file).parent,
    })
    for key, why in bad.items():
        log.warning("%s: saving there will fail", why)
        say(f"cannot write {key.split()[1]}")
    return bad
