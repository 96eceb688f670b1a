"""MidiController ports are never leaked: a connect that fails half-way, or that
ends after close() gave up waiting for it, closes what it opened.

Real python-rtmidi on a JACK dummy server; the controller is FakeNanoKontrol2.
Our ports are counted in JACK's own port listing, so a leaked one shows.
"""

from __future__ import annotations

import time

import pytest
import rtmidi

from device.errors import DeviceError
from device.senses.midi import MidiController, _Scanner
from tests.device.fake_nanokontrol2 import FakeNanoKontrol2
from tests.device.test_midi import SYSEX_TIMEOUT, Box
from tests.jack import jack_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("jack_server")


def our_input_ports() -> list[str]:
    """Ports named "aesynth in" registered with JACK (each open MIDI input has one)."""
    lister = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name="aesynth-test-lister")
    try:
        return [p for p in lister.get_ports() if "aesynth in" in p]
    finally:
        lister.delete()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_a_connect_failing_mid_sysex_closes_its_ports_before_the_retry(monkeypatch):
    fake, box = FakeNanoKontrol2(), Box()
    real = MidiController._set_external_leds
    calls = []

    def unplugged_once(self: MidiController) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise DeviceError("nanoKONTROL2 unplugged mid-SysEx (test)")
        real(self)

    monkeypatch.setattr(MidiController, "_set_external_leds", unplugged_once)
    ctl = MidiController(box.post, box.current, scan_interval=0.1, max_backoff=0.3,
                         sysex_timeout=SYSEX_TIMEOUT).start()
    try:
        assert ctl.wait_connected(10.0)
        assert len(calls) == 2 and ctl.connects == 2
        assert len(our_input_ports()) == 1  # the first connect's input was closed
        base = ctl.received
        fake.press(48)
        assert box.wait_for(lambda: box.controls.muted[0])
        assert wait_until(lambda: ctl.received >= base + 2)
        time.sleep(0.2)
        assert ctl.received == base + 2  # one port: the press and release counted once
        assert box.controls.muted[0]
    finally:
        ctl.close()
        fake.close()
    assert our_input_ports() == []


def test_a_connect_ending_after_close_gave_up_installs_nothing(monkeypatch):
    fake, box = FakeNanoKontrol2(), Box()
    ctl = MidiController(box.post, box.current, scan_interval=0.1,
                         sysex_timeout=SYSEX_TIMEOUT)
    real_outputs = _Scanner.outputs
    reached = []

    def close_gives_up_here(self: _Scanner) -> list[str]:
        # Inside _connect, input already open: as if close() had timed out its join.
        reached.append(1)
        ctl._stopping.set()
        return real_outputs(self)

    monkeypatch.setattr(_Scanner, "outputs", close_gives_up_here)
    ctl.start()
    try:
        assert wait_until(lambda: reached and not ctl._threads[1].is_alive())
        assert not ctl.connected
        assert ctl._input is None and ctl._output is None
        assert our_input_ports() == []
    finally:
        ctl.close()
        fake.close()
