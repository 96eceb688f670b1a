"""The ui thread (device/senses/feedback.py): the display and the LEDs follow the snapshots,
redrawn only on a change; a failed audio thread stops the app."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from device.senses.feedback import Feedback
from device.sound.audio import AudioStats
from device.state.controls import UnitControls
from tests.device.test_app import Snap


class Shown:
    def __init__(self):
        self.states: list = []

    def show(self, state):
        self.states.append(state)


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_the_display_follows_a_new_snapshot_and_a_new_message_only():
    snap = Snap("resynth", "tiny", UnitControls(8).snapshot())
    engine = SimpleNamespace(snapshot=snap, gain_reduction_db=0.0)
    loop = SimpleNamespace(stats=AudioStats(connected=True), first_period_at=None, failure=None)
    display, said = Shown(), [None]
    feedback = Feedback(engine, loop, message=lambda: said[0], on_failure=lambda: None,
                        display=display, note="no line-in", max_fps=100.0)
    stopping = threading.Event()
    t = threading.Thread(target=feedback.run, args=(stopping,))
    t.start()
    try:
        assert wait_for(lambda: len(display.states) == 1)
        time.sleep(0.1)  # ten polls of the same snapshot: no redraw
        assert len(display.states) == 1 and display.states[0].message == "no line-in"
        said[0] = "preset 1"
        assert wait_for(lambda: len(display.states) == 2)
        engine.snapshot = Snap("generate", "tiny", UnitControls(8).snapshot())
        assert wait_for(lambda: len(display.states) == 3)
        assert display.states[-1].mode == "generate" and display.states[-1].message == "preset 1"
        assert feedback.state is display.states[-1]
    finally:
        stopping.set()
        t.join(2.0)


def test_a_failed_audio_thread_stops_the_app():
    engine = SimpleNamespace(snapshot=None, gain_reduction_db=0.0)
    loop = SimpleNamespace(stats=AudioStats(), first_period_at=None, failure=RuntimeError("x"))
    failed = threading.Event()
    feedback = Feedback(engine, loop, message=lambda: None, on_failure=failed.set,
                        max_fps=100.0)
    t = threading.Thread(target=feedback.run, args=(threading.Event(),))
    t.start()
    t.join(2.0)
    assert failed.is_set() and not t.is_alive() and feedback.state is None
