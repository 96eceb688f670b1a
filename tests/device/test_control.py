"""The control thread's command handling (device/control.py), without audio or devices."""

from __future__ import annotations

import logging
import queue
import threading
import time
from types import SimpleNamespace

import pytest

from device.control import CONFIRM_S, Control
from device.errors import AesynthError
from device.sound.audio import Rejected
from device.state import commands as c
from device.state.controls import UnitControls


class Said:
    """Collects what the control says, posts and asks, as the app's callbacks would."""

    def __init__(self):
        self.lines: list[str | None] = []
        self.posted: list[object] = []
        self.stops = 0

    def control(self, **parts) -> Control:
        engine = SimpleNamespace(snapshot=SimpleNamespace(model="tiny",
                                                          controls=UnitControls(8).snapshot()))
        return Control(engine, None, queue.SimpleQueue(), post=self.posted.append,
                       say=self.lines.append, stop=self._stop, **parts)

    def _stop(self):
        self.stops += 1


def test_a_quit_asks_first_and_quits_on_a_second_press_within_confirm_s(monkeypatch):
    said = Said()
    control = said.control()
    now = [100.0]
    monkeypatch.setattr("device.control.time", SimpleNamespace(monotonic=lambda: now[0]))
    control.handle(c.Shutdown())
    assert said.lines == ["again to quit"] and said.stops == 0
    now[0] += CONFIRM_S + 0.1  # too late: asks again
    control.handle(c.Shutdown())
    assert said.lines == ["again to quit"] * 2 and said.stops == 0
    now[0] += CONFIRM_S - 0.1
    control.handle(c.Shutdown())
    assert said.stops == 1


def test_commands_for_missing_parts_say_so_and_post_nothing():
    said = Said()
    control = said.control()
    for cmd in (c.StepModel(1), c.ToggleRecording(), c.ToggleLearn(), c.StepLearn(1),
                c.SavePreset(1), c.RecallPreset(1)):
        control.handle(cmd)
    assert said.lines == ["no model library", "no recorder", "learn: no MIDI controller",
                          "learn: no MIDI controller"]
    assert said.posted == [] and not control.recording


def test_a_recall_posts_the_preset_s_unit_commands(tmp_path):
    from device.state.presets import PresetStore

    said = Said()
    presets = PresetStore(tmp_path)
    control = said.control(presets=presets)
    control.handle(c.RecallPreset(2))
    assert said.lines == ["no preset 2"] and said.posted == []
    controls = UnitControls(8)
    controls.apply(c.SetGain(3, 0.25))
    presets.save("tiny", 2, controls.snapshot())
    control.handle(c.RecallPreset(2))
    assert said.lines[-1] == "preset 2"
    assert c.SetGain(3, 0.25) in said.posted


def test_an_expected_error_is_one_line_and_the_thread_goes_on(caplog):
    said = Said()
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    class BadLibrary:
        def step(self, delta):
            raise AesynthError("bundle x: checksum mismatch")

    engine = SimpleNamespace()
    control = Control(engine, None, inbox, post=said.posted.append, say=said.lines.append,
                      stop=lambda: None, library=BadLibrary())
    stopping = threading.Event()
    t = threading.Thread(target=control.run, args=(stopping,))
    with caplog.at_level(logging.INFO, logger="device.app"):
        t.start()
        inbox.put(c.StepModel(1))
        inbox.put(Rejected(c.SetGain(99, 1.0), "unit 99 out of range"))
        deadline = time.monotonic() + 5
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        stopping.set()
        t.join(2.0)
    assert not t.is_alive()
    assert said.lines == ["bundle x: checksum mismatch"]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.ERROR, "StepModel: bundle x: checksum mismatch") in messages
    assert any(level == logging.WARNING and "unit 99 out of range" in text
               for level, text in messages)
    assert all(r.exc_info is None for r in caplog.records)


@pytest.mark.parametrize("quit_, said_last", [("exit", None), ("poweroff", "powering off")])
def test_poweroff_asks_systemd_instead_of_stopping(tmp_path, monkeypatch, quit_, said_last):
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    said = Said()
    control = said.control(quit=quit_)
    control.handle(c.Shutdown())
    control.handle(c.Shutdown())
    if said_last is None:
        assert said.stops == 1 and not (tmp_path / "poweroff").exists()
    else:
        assert said.stops == 0 and said.lines[-1] == said_last
        assert (tmp_path / "poweroff").exists()
