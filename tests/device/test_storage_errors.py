"""Expected errors are one line in the log and a message on the display, never a traceback;
the folders the app writes into are checked at start (issue 15, item 12)."""

from __future__ import annotations

import logging
import time

from device.app import App
from device.state import commands as c
from tests.device.test_app import StandInEngine, app_config

UNWRITABLE = "/sys/aesynth-test-recordings"  # sysfs refuses new entries even to root


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_an_unwritable_recordings_folder_is_one_line_at_start_and_at_the_press(tmp_path,
                                                                              caplog):
    """(failed on the old code: nothing at start, a 12-line traceback at the press)"""
    cfg = app_config(tmp_path, input="none").replace("storage", recordings_dir=UNWRITABLE)
    app = App(cfg, engine_factory=StandInEngine)
    with caplog.at_level(logging.INFO):
        app.start()
        try:
            said = [r for r in caplog.records if UNWRITABLE in r.getMessage()]
            assert len(said) == 1 and said[0].levelno == logging.WARNING
            assert "recordings_dir" in said[0].getMessage()
            assert said[0].exc_info is None and "\n" not in said[0].getMessage()
            assert app.message == "cannot write recordings_dir"
            caplog.clear()
            app.post(c.ToggleRecording())
            assert wait_for(lambda: any(UNWRITABLE in r.getMessage() for r in caplog.records))
            time.sleep(0.2)
        finally:
            app.close()
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None and "cannot record" in lines[0].getMessage()
    assert "cannot record" in (app.message or "")
    assert not app.recording


def test_an_unwritable_presets_folder_is_one_line_when_saving(tmp_path, caplog):
    cfg = app_config(tmp_path, input="none").replace("storage",
                                                     presets_dir="/sys/aesynth-test-presets")
    app = App(cfg, engine_factory=StandInEngine)
    with caplog.at_level(logging.INFO):
        app.start()
        try:
            assert any("presets_dir" in r.getMessage() for r in caplog.records)
            caplog.clear()
            app.post(c.SavePreset(1))
            assert wait_for(lambda: any(r.levelno >= logging.ERROR for r in caplog.records))
        finally:
            app.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "aesynth-test-presets" in errors[0].getMessage()


def test_an_oled_that_stops_answering_is_one_line_not_a_traceback(caplog):
    """An I2C error while drawing (luma raises OSError: Remote I/O error) is expected on a
    box whose cable works loose (failed on the old code: a traceback)."""
    from device.senses.display import Display, DisplayState
    from device.state.controls import UnitControls

    class Unplugged:  # what luma's ssd1306 does when the bus stops answering
        def display(self, image):
            raise OSError(121, "Remote I/O error")

    state = DisplayState(controls=UnitControls(8).snapshot(), mode="resynth", model="m",
                         playing=True, xruns=0)
    with caplog.at_level(logging.WARNING):
        d = Display(Unplugged())
        try:
            d.show(state)
            assert wait_for(lambda: d.errors >= 1)
        finally:
            d.close()
    said = [r for r in caplog.records if "failed to draw" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None
    assert "Remote I/O error" in said[0].getMessage()


def test_the_model_state_folder_is_checked_at_start_too(tmp_path, caplog):
    cfg = app_config(tmp_path, input="none").replace(
        "model", state_file="/sys/aesynth-test-state/state.json")
    app = App(cfg, engine_factory=StandInEngine)
    with caplog.at_level(logging.WARNING):
        app.start()
        app.close()
    said = [r for r in caplog.records if "aesynth-test-state" in r.getMessage()]
    assert len(said) == 1 and "state_file" in said[0].getMessage()
    assert said[0].exc_info is None
