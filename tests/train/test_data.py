"""Dataset building: exact frames, splits by track, the on-disk format (no TensorFlow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train.data as data
from device.sound.features import LOW_LATENCY, PAPER, magnitudes


@pytest.mark.parametrize("config", [LOW_LATENCY, PAPER], ids=["low_latency", "paper"])
def test_frames_at_matches_whole_signal_stft(config, monkeypatch):
    monkeypatch.setattr(data, "CHUNK_SECONDS", 0.3)  # force several chunks
    rng = np.random.default_rng(3)
    x = rng.standard_normal(25_000)
    full = magnitudes(x, config=config)
    frames = data.full_frames(len(x), config)
    idx = np.sort(rng.choice(np.arange(frames.start, frames.stop), 30, replace=False))
    got = data.frames_at(x, idx, config)
    np.testing.assert_allclose(got, full[idx], rtol=1e-5, atol=1e-4)


def test_full_frames_lie_inside_the_signal():
    r = data.full_frames(10_000, LOW_LATENCY)
    # frame g covers samples [(g+1)R - K, (g+1)R)
    K, R = LOW_LATENCY.win_length, LOW_LATENCY.hop_length
    assert (r.start + 1) * R - K >= 0 and r.start * R + R - K < R
    assert (r.stop) * R <= 10_000 < (r.stop + 1) * R


def test_split_tracks_keeps_each_track_in_one_split():
    tracks = [data.Track(f"s/t{i}", f"/x/t{i}", "s", "audio") for i in range(12)]
    durations = {t.id: 60.0 + 10 * i for i, t in enumerate(tracks)}
    fractions = {"train": 5 / 7, "valid": 1 / 7, "test": 1 / 7}
    a = data.split_tracks(tracks, durations, seed=4, fractions=fractions)
    b = data.split_tracks(tracks, durations, seed=4, fractions=fractions)
    assert a == b  # seeded
    ids = [t.id for s in data.SPLITS for t in a[s]]
    assert sorted(ids) == sorted(t.id for t in tracks) and len(set(ids)) == len(ids)
    assert all(a[s] for s in data.SPLITS)
    c = data.split_tracks(tracks, durations, seed=5, fractions=fractions)
    assert a != c


def test_split_tracks_refuses_too_few_tracks():
    tracks = [data.Track("s/a", "/a", "s", "audio"), data.Track("s/b", "/b", "s", "audio")]
    with pytest.raises(data.DataError, match="at least 3 tracks"):
        data.split_tracks(tracks, {"s/a": 1.0, "s/b": 1.0}, seed=0,
                          fractions={"train": 0.8, "valid": 0.1, "test": 0.1})


def test_build_dataset_on_real_music(tmp_path, pushover_tracks):
    counts = {"train": 300, "valid": 100, "test": 100}
    ds = data.build_dataset(tmp_path / "ds", frame=LOW_LATENCY, sources=["pushover"],
                            counts=counts, seed=1, max_tracks=3, max_seconds=4.0)
    assert ds.train.shape == (300, LOW_LATENCY.n_bins) and ds.train.dtype == np.float32
    assert len(ds.valid) == 100 and len(ds.test) == 100
    splits = {s: set(ds.tracks(s)) for s in data.SPLITS}
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["valid"])
    assert sum(len(v) for v in splits.values()) == 3
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["frame"] == LOW_LATENCY.to_dict()
    assert {t["package"] for t in m["tracks"]} == {"pushover-data"}
    back = data.load_dataset(tmp_path / "ds")
    np.testing.assert_array_equal(back.test, ds.test)
    # every stored frame is a real frame of its track, analysed by device.sound.features
    track = next(t for t in m["tracks"] if t["split"] == "test")
    x = data.load_audio(track["path"], LOW_LATENCY.sample_rate)[: 4 * 22050]
    full = magnitudes(x, config=LOW_LATENCY).astype(np.float32)
    dist = np.abs(full[None, :, :200] - ds.test[:5, None, :200]).max(axis=-1).min(axis=1)
    assert np.all(dist < 1e-3)


def test_unknown_source_is_named(tmp_path):
    with pytest.raises(data.DataError, match="nosuch"):
        data.build_dataset(tmp_path / "d", frame=LOW_LATENCY, sources=["nosuch"])


def test_missing_package_without_install_says_what_to_install(monkeypatch):
    src = data.Source("ghost", "ghost-music", "/nonexistent/dir", "*.ogg")
    with pytest.raises(data.DataError, match="apt-get install ghost-music"):
        data.ensure_packages([src], install=False)


_WRITE = ("import sys, numpy as np; from pathlib import Path; import train.data as d; "
          "d.write_dataset(Path(sys.argv[1]), {s: np.full((2, 3), 2.0) for s in d.SPLITS}, "
          "{'v': 2})")


def test_rewriting_a_dataset_keeps_the_old_one_until_the_new_is_in_place(tmp_path):
    out = tmp_path / "ds"

    def arrays(v: float) -> dict[str, np.ndarray]:
        return {s: np.full((2, 3), v, np.float32) for s in data.SPLITS}

    data.write_dataset(out, arrays(1.0), {"v": 1})
    env = dict(os.environ, AESYNTH_CRASH_AT="swap-between-renames")
    repo = Path(data.__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _WRITE, str(out)], env=env, cwd=repo,
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(".old-ds-")]
    assert not out.exists() and len(aside) == 1  # the old one survives, aside
    assert json.loads((aside[0] / "manifest.json").read_text()) == {"v": 1}
    data.write_dataset(out, arrays(3.0), {"v": 3})  # the next build puts things right
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert json.loads((out / "manifest.json").read_text()) == {"v": 3}
    assert np.load(out / "test.npy", allow_pickle=False)[0, 0] == 3.0


def _zip_of_tones(path: Path, n: int, seconds: float = 1.0) -> list[np.ndarray]:
    """A zip holding ``n`` WAV members music/tone{i}.wav (and a non-matching readme)."""
    import io
    import zipfile

    import soundfile as sf

    rate = LOW_LATENCY.sample_rate
    t = np.arange(int(seconds * rate)) / rate
    tones = [(0.3 * np.sin(2 * np.pi * 220.0 * (i + 1) * t)).astype(np.float32)
             for i in range(n)]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not music")
        for i, x in enumerate(tones):
            buf = io.BytesIO()
            sf.write(buf, x, rate, format="WAV", subtype="FLOAT")
            z.writestr(f"music/tone{i}.wav", buf.getvalue())
    return tones


def test_a_zip_source_trains_on_its_members(tmp_path, monkeypatch):
    # ufoai-music ships its tracks inside one .pk3 (a zip): each member is a track
    _zip_of_tones(tmp_path / "0music.pk3", 3)
    src = data.Source("zipped", "zipped-music", str(tmp_path), "*.pk3", kind="zip",
                      members="music/*.wav", min_seconds=0.5)
    monkeypatch.setitem(data.SOURCES, "zipped", src)
    tracks = data.find_tracks([src])
    assert [t.id for t in tracks] == [f"zipped/music/tone{i}.wav" for i in range(3)]
    counts = {"train": 40, "valid": 20, "test": 20}
    ds = data.build_dataset(tmp_path / "ds", frame=LOW_LATENCY, sources=["zipped"],
                            counts=counts, seed=0)
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert {t["id"] for t in m["tracks"]} == {t.id for t in tracks}
    # every frame holds one member's tone: its peak bin is 220 Hz times (member + 1)
    peaks = np.argmax(ds.train, axis=1) * LOW_LATENCY.sample_rate / LOW_LATENCY.n_fft
    train_ids = ds.tracks("train")
    want = {220.0 * (int(i.split("tone")[1][0]) + 1) for i in train_ids}
    assert {min(want, key=lambda f, p=p: abs(f - p)) for p in peaks} == want
    assert np.all(np.min([np.abs(peaks - f) for f in want], axis=0) < 11.0)


def test_a_broken_archive_is_one_line_naming_it(tmp_path):
    (tmp_path / "0music.pk3").write_bytes(b"PK\x03\x04 not really a zip")
    src = data.Source("zipped", "zipped-music", str(tmp_path), "*.pk3", kind="zip",
                      members="music/*.ogg")
    with pytest.raises(data.DataError, match="0music.pk3") as e:
        data.find_tracks([src])
    assert "\n" not in str(e.value)
