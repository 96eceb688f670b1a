"""The quiet collector: held while the app starts, frozen once settled, every collection timed."""

from __future__ import annotations

import gc
import logging
import threading
import time

import numpy as np
import pytest

from device import app as app_module
from device.app import App
from device.sound.collector import SLOW_MS, QuietCollector
from tests.device.test_app import StandInEngine, app_config


@pytest.fixture
def collector():
    was = gc.isenabled()
    q = QuietCollector()
    yield q
    q.release()
    assert gc.isenabled() == was and gc.get_freeze_count() == 0


def test_hold_stops_automatic_collection_and_settle_starts_timing(collector):
    before = gc.get_stats()[0]["collections"]
    collector.hold()
    assert not gc.isenabled()
    junk = [[] for _ in range(50_000)]  # far past the generation-0 threshold
    del junk
    assert gc.get_stats()[0]["collections"] == before, "an automatic collection ran while held"
    gc.collect()  # the app's deliberate one, before the audio starts: not counted
    assert collector.report().collections == 0
    collector.settle()
    gc.collect()
    r = collector.report()
    assert r.collections == 1 and r.full_collections == 1 and r.longest_generation == 2
    assert r.longest_ms > 0 and r.settles == 1


def test_settle_freezes_the_living_so_a_full_collection_has_little_to_scan(collector):
    collector.hold()
    long_lived = [{"unit": k, "row": [k, k + 1]} for k in range(100_000)]
    assert len(gc.get_objects()) > 200_000
    collector.settle()
    assert gc.isenabled() and collector.report().settles == 1
    assert gc.get_freeze_count() > 200_000
    # What a full collection scans from now on: what was made after the settle.
    assert len(gc.get_objects()) < 20_000
    assert long_lived[99_999]["row"] == [99_999, 100_000]  # frozen, not freed


def test_a_slow_collection_asks_for_another_settle():
    ticks = iter([0, int(SLOW_MS * 1e6) + 1, 10, 20])  # start/stop of two collections
    q = QuietCollector(clock=lambda: next(ticks))
    q.hold()
    q.settle()
    try:
        gc.collect()
        assert q.wants_settle and q.report().slow_collections == 1
        q.settle()
        assert not q.wants_settle
        gc.collect()  # 10 ns: fast
        assert not q.wants_settle and q.report().slow_collections == 1
        assert q.report().longest_ms == pytest.approx((SLOW_MS * 1e6 + 1) / 1e6)
    finally:
        q.release()
    assert q._callback not in gc.callbacks


def test_release_restores_a_collector_that_was_off():
    gc.disable()
    try:
        q = QuietCollector().hold()
        q.settle()
        assert not gc.isenabled(), "settle must not turn on a collector the host had off"
        q.release()
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_the_app_settles_after_the_first_period_and_reports(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(app_module, "SETTLE_S", 0.3)
    x = np.zeros(22050, dtype=np.float32)
    import soundfile as sf

    sf.write(tmp_path / "in.wav", x, 22050, subtype="FLOAT")
    app = App(app_config(tmp_path, input=str(tmp_path / "in.wav")),
              engine_factory=StandInEngine)
    with caplog.at_level(logging.INFO, logger="device.app"):
        app.start()
        try:
            assert not gc.isenabled(), "the collector must stay held while the app starts"
            deadline = time.monotonic() + 20
            while app.collector.report().settles == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert app.collector.report().settles == 1 and gc.isenabled()
            assert gc.get_freeze_count() > 10_000
        finally:
            app.close()
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    assert "collector: " in caplog.text and " garbage collections (" in caplog.text
    assert "longest gap between periods" in caplog.text


def test_the_gap_between_periods_sees_a_gil_hold_the_engine_cost_cannot(tmp_path, monkeypatch):
    """Another thread holding the GIL (here: a full collection of a big object graph) delays
    the audio thread between hops; only the gap between periods shows it."""
    from device.sound.audio import SilentSource
    from tests.device.audio_rig import alsa_config
    from tests.device.test_audio import PassThrough, make_loop, wait_for

    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa_config(tmp_path)))
    loop, _, _ = make_loop(PassThrough(128), SilentSource())  # the file plugin: unpaced
    graph = [[k] for k in range(1_500_000)]
    for a, b in zip(graph, graph[1:], strict=False):
        a.append(b)  # nothing frees these but the collector: it walks them all
    loop.start()
    try:
        wait_for(lambda: loop.stats.hops >= 200)
        held = []

        def collect():
            t0 = time.perf_counter()
            gc.collect()
            held.append(time.perf_counter() - t0)

        t = threading.Thread(target=collect)
        t.start()
        t.join()
        n = loop.stats.hops
        wait_for(lambda: loop.stats.hops >= n + 200)
    finally:
        loop.stop()
    del graph
    s = loop.stats
    assert held[0] > 0.02, f"collection took only {held[0] * 1e3:.1f} ms: graph too small"
    assert s.max_gap_us >= 0.5 * held[0] * 1e6, (s.max_gap_us, held)
