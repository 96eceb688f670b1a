"""The audio device that stops answering: jackd stopped under ALSA's jack plugin.

Without the watchdog the audio thread blocks in a write forever: no "audio device lost",
the display keeps showing PLAY, nothing when jackd comes back, and stopping waits 5 s.
"""

from __future__ import annotations

import logging
import queue
import time

import numpy as np
import pytest

from device.sound.audio import AudioConfig, AudioLoop, SilentSource
from device.sound.watchdog import MIN_TIMEOUT_S, TIMEOUT_BUFFERS, PeriodWatchdog
from tests.device.audio_rig import JackServer, alsa_config

RATE, HOP = 22050, 256


class Copy:
    hop_length = HOP

    def process(self, block, out):
        np.copyto(out, block)
        return out

    def apply(self, cmd):
        return False


def _until(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_timeout_is_derived_from_the_period():
    assert PeriodWatchdog(period=256, sample_rate=22050, periods=4).timeout_s == MIN_TIMEOUT_S
    big = PeriodWatchdog(period=4096, sample_rate=22050, periods=16)
    assert big.timeout_s == pytest.approx(TIMEOUT_BUFFERS * 16 * 4096 / 22050)


def test_stopped_jackd_is_a_lost_device_reopened_when_it_returns(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path)))
    server = JackServer(rate=RATE, period=HOP, log_dir=tmp_path)
    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    cfg = AudioConfig(playback_device="plug:jk", realtime=False, retry_s=0.1, retry_max_s=0.5)
    loop = AudioLoop(Copy(), SilentSource(), sample_rate=RATE, commands=queue.SimpleQueue(),
                     to_control=lambda cmd: None, config=cfg)
    caplog.set_level(logging.WARNING)
    again = None
    try:
        loop.start()
        assert _until(lambda: loop.stats.hops > 50, 20), loop.stats
        server.stop()  # jackd stopped (SIGTERM): the jack plugin's client never hears of it
        stopped_at = time.monotonic()
        assert _until(lambda: not loop.stats.connected, MIN_TIMEOUT_S + 10), \
            f"still 'connected' {time.monotonic() - stopped_at:.1f} s after jackd stopped"
        assert "completed no period" in (loop.stats.error or "") or \
            "jk" in (loop.stats.error or ""), loop.stats.error
        assert "audio device lost" in caplog.text
        hops = loop.stats.hops
        again = JackServer(rate=RATE, period=HOP, log_dir=tmp_path, name=server.name)
        assert _until(lambda: loop.stats.connected and loop.stats.reconnects >= 1, 30), \
            loop.stats
        assert _until(lambda: loop.stats.hops > hops + 50, 20), loop.stats  # playing again
        assert "audio device back after reconnect" in caplog.text
        # jackd gone once more: stop() must not wait on a PCM that never answers.
        again.stop()
        time.sleep(0.5)
        t0 = time.monotonic()
        loop.stop()
        assert time.monotonic() - t0 < 4.0, "stop waited on the dead device"
        assert not loop.running
    finally:
        loop.stop()
        server.stop()
        if again is not None:
            again.stop()
