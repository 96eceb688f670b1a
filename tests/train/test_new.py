"""``aesynth-train new`` on a few seconds of real recordings (pushover-data), end to end:
the bundle passes ``aesynth check``, plays in ``aesynth render``, records its sources;
every error is one line and leaves nothing behind; the analysis cache is reused."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.cli import main as aesynth
from device.models.bundle import read_bundle
from device.models.check import run_check
from device.sound.features import LOW_LATENCY
from train import data as D
from train.cli import main as train_cli

pytestmark = pytest.mark.train
TINY = ["--epochs", "1", "--frames", "120", "--play-seconds", "2"]


def make_audio(folder: Path, tracks: list[Path], *, seconds: float = 3.0) -> Path:
    """A musician's folder: 3-second cuts of real recordings in several formats, rates and
    channel counts (one in a subfolder), a text file and a file that is not audio."""
    from scipy.signal import resample_poly

    kinds = [("take0.wav", "WAV", 44100, 2), ("loops/take1.flac", "FLAC", 48000, 1),
             ("take2.ogg", "OGG", 22050, 2), ("loops/take3.wav", "WAV", 16000, 1)]
    for (name, fmt, rate, ch), track in zip(kinds, tracks, strict=False):
        x, r = sf.read(track, frames=int(seconds * 44100), start=int(40 * 44100),
                       dtype="float32", always_2d=True)
        if ch == 1:
            x = x.mean(axis=1, keepdims=True)
        if rate != r:
            g = math.gcd(rate, r)
            x = resample_poly(x, rate // g, r // g, axis=0).astype(np.float32)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / name, x, rate, format=fmt)
    (folder / "notes.txt").write_text("tempo 92, key of D\n")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return folder


@pytest.fixture(scope="module")
def audio(tmp_path_factory, pushover_tracks) -> Path:
    return make_audio(tmp_path_factory.mktemp("audio"), pushover_tracks[:4])


@pytest.fixture(scope="module")
def made(tmp_path_factory, audio) -> dict:
    """One run of ``aesynth-train new`` through the CLI, shared by the tests below."""
    root = tmp_path_factory.mktemp("new")
    out, cache = root / "out", root / "cache"
    rc = train_cli(["new", "mine", str(audio), "--out", str(out), "--cache", str(cache), *TINY])
    assert rc == 0
    return {"out": out, "bundle": out / "mine", "report": out / "mine-report", "cache": cache,
            "audio": audio}


def test_bundle_passes_check(made):
    buf = io.StringIO()
    assert run_check([str(made["bundle"])], out=buf) == 0
    assert ": OK  mine: 8 units" in buf.getvalue()
    b = read_bundle(made["bundle"])
    assert b.frame == LOW_LATENCY and b.encoder.quantization == "float16"
    # the default start: models/default's recipe and weights, fine-tuned
    assert b.manifest["training"]["recipe"]["name"].endswith("-from-default")


@pytest.mark.parametrize("mode", ["resynth", "generate"])
def test_bundle_plays_in_render(made, tmp_path, mode):
    wav = tmp_path / f"{mode}.wav"
    args = ["render", "--model", str(made["bundle"]), "--mode", mode, "--out", str(wav)]
    args += (["--in", str(made["audio"] / "take0.wav")] if mode == "resynth"
             else ["--seconds", "2"])
    assert aesynth(args) == 0
    y, rate = sf.read(wav)
    assert rate == LOW_LATENCY.sample_rate and len(y) >= rate
    assert np.all(np.isfinite(y))
    assert 20 * np.log10(np.sqrt(np.mean(y[rate // 2:] ** 2)) + 1e-12) > -60  # it sounds


def test_manifest_records_sources_and_figures_never_audio(made):
    m = json.loads((made["bundle"] / "manifest.json").read_text())
    sources = {s["name"]: s for s in m["training"]["sources"]}
    assert set(sources) == {"take0.wav", "loops/take1.flac", "take2.ogg", "loops/take3.wav"}
    for name, s in sources.items():
        data = (made["audio"] / name).read_bytes()
        assert s["sha256"] == hashlib.sha256(data).hexdigest()
        assert s["seconds"] == pytest.approx(3.0, abs=0.01)
        assert s["split"] in ("train", "valid", "test")
    assert {s["split"] for s in sources.values()} == {"train", "valid", "test"}  # by file
    new = m["training"]["new"]
    assert new["split"] == "file" and new["files"] == 4
    assert [s["name"] for s in new["skipped"]] == ["broken.wav"]  # named, skipped, counted
    assert new["ignored_by_name"] == 1  # notes.txt
    assert new["held_out"]["new"]["sc_db"] < 10 and "compare" in new["held_out"]
    assert set(new["playability"]) >= {"all units audible", "distinct controls (PR)"}
    # no audio in the bundle: three files, the manifest far smaller than the audio
    assert sorted(os.listdir(made["bundle"])) == ["decoder.tflite", "encoder.tflite",
                                                  "manifest.json"]
    assert "paths" not in m["training"]["data"]


def test_report_has_its_pictures(made):
    text = (made["report"] / "report.md").read_text()
    pictures = [line.split("(")[1].rstrip(")") for line in text.splitlines()
                if line.startswith("![")]
    assert {"training_curves.png", "spectrogram.png", "mine.png"} <= set(pictures)
    for p in pictures:
        assert (made["report"] / p).stat().st_size > 1000
    assert "broken.wav" in text and "Held-out audio" in text


# -- the analysis cache ---------------------------------------------------------------
def test_second_analysis_comes_from_the_cache(audio, tmp_path, monkeypatch):
    found = D.probe_audio([audio])
    first, info1 = D.audio_dataset(found, frame=LOW_LATENCY, cache_dir=tmp_path, seed=3)
    assert info1["analysed"] == 4 and info1["cached"] == 0

    def no_analysis(*a, **k):
        raise AssertionError("analysed again despite the cache")

    monkeypatch.setattr(D, "frames_at", no_analysis)
    monkeypatch.setattr(D, "load_audio", no_analysis)
    second, info2 = D.audio_dataset(D.probe_audio([audio]), frame=LOW_LATENCY,
                                    cache_dir=tmp_path, seed=3)
    assert info2["analysed"] == 0 and info2["cached"] == 4
    for s in D.SPLITS:
        np.testing.assert_array_equal(first.split(s), second.split(s))


def test_cache_is_keyed_by_content_and_frame(audio, tmp_path):
    found = D.probe_audio([audio])
    D.audio_dataset(found, frame=LOW_LATENCY, cache_dir=tmp_path)
    from device.sound.features import PAPER

    _, info = D.audio_dataset(found, frame=PAPER, cache_dir=tmp_path)
    assert info["analysed"] == 4  # another frame: another analysis
    changed = tmp_path / "changed"
    changed.mkdir()
    x, r = sf.read(audio / "take0.wav")
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(changed / name, x, r)
    sf.write(changed / "b.wav", 0.5 * x, r)  # same name elsewhere, other content
    _, info = D.audio_dataset(D.probe_audio([changed]), frame=LOW_LATENCY, cache_dir=tmp_path)
    assert info["analysed"] == 1 and info["cached"] == 2  # a and c are take0's bytes


def test_one_long_file_is_split_by_time(pushover_tracks, tmp_path):
    x, r = sf.read(pushover_tracks[0], frames=12 * 44100, start=30 * 44100)
    sf.write(tmp_path / "long.flac", x, r)
    ds, info = D.audio_dataset(D.probe_audio([tmp_path / "long.flac"]), frame=LOW_LATENCY,
                               cache_dir=tmp_path / "cache")
    assert info["split"] == "time" and all(len(ds.split(s)) for s in D.SPLITS)
    spans = {r_["split"]: (r_["start"], r_["start"] + r_["seconds"])
             for r_ in ds.manifest["tracks"]}
    assert spans["train"][1] <= spans["valid"][0] + 1e-6 <= spans["test"][0] + 1e-6
    # no frame's window crosses a boundary: every sample feeds one split at most
    n = int(12 * LOW_LATENCY.sample_rate)
    r = D.full_frames(n, LOW_LATENCY)
    idx = np.arange(r.start, r.stop, D.CACHE_STRIDE_HOPS)
    masks = D.time_splits(idx, n, LOW_LATENCY)
    covered = np.zeros(n, int)
    for s in D.SPLITS:
        for g in idx[masks[s]]:
            end = (g + 1) * LOW_LATENCY.hop_length
            covered[end - LOW_LATENCY.win_length:end] |= 1 << D.SPLITS.index(s)
    assert not np.any(np.isin(covered, [3, 5, 6, 7]))


# -- errors: one line, nothing written --------------------------------------------------
def run_cli(args: list[str], capsys) -> tuple[int, str]:
    rc = train_cli(args)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, (err[-1] if err else "")


def test_no_audio_found_names_the_paths(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("no sound here")
    rc, line = run_cli(["new", "x", str(tmp_path / "empty"), str(tmp_path / "docs"),
                        "--out", str(tmp_path / "out")], capsys)
    assert rc == 1 and line.startswith("aesynth-train new: no audio found in ")
    assert str(tmp_path / "empty") in line and str(tmp_path / "docs") in line
    assert "1 other file(s) ignored" in line
    assert not (tmp_path / "out" / "x").exists()


def test_missing_path_is_named(tmp_path, capsys):
    rc, line = run_cli(["new", "x", str(tmp_path / "nowhere"), "--out", str(tmp_path)], capsys)
    assert rc == 1 and f"audio path {str(tmp_path / 'nowhere')!r} does not exist" in line


def test_only_unreadable_files(tmp_path, capsys):
    (tmp_path / "a.wav").write_bytes(b"not a wav at all")
    rc, line = run_cli(["new", "x", str(tmp_path / "a.wav"), "--out", str(tmp_path / "o")],
                       capsys)
    assert rc == 1 and "no audio found" in line and "1 unreadable" in line and "a.wav" in line


def test_too_little_audio_names_minimum_and_found(audio, tmp_path, capsys):
    x, r = sf.read(audio / "take0.wav", frames=2 * 44100)
    sf.write(tmp_path / "short.wav", x, r)
    rc, line = run_cli(["new", "x", str(tmp_path / "short.wav"), "--out",
                        str(tmp_path / "o")], capsys)
    assert rc == 1
    assert "too little audio: need at least 5 s, found 2.00 s in 1 file(s)" in line
    assert not (tmp_path / "o" / "x").exists()


def test_bad_name_and_units(audio, tmp_path, capsys):
    rc, line = run_cli(["new", "../up", str(audio), "--out", str(tmp_path)], capsys)
    assert rc == 1 and "NAME must be 1-64 characters" in line and "'../up'" in line
    rc, line = run_cli(["new", "ok", str(audio), "--units", "0", "--out", str(tmp_path)],
                       capsys)
    assert rc == 1 and "--units must be in 1..4096, got 0" in line


def test_refuses_to_replace_what_is_not_a_bundle(audio, tmp_path, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "precious.py").write_text("x = 1\n")
    rc, line = run_cli(["new", "train", str(audio), "--out", str(tmp_path)], capsys)
    assert rc == 1 and "exists and is not an aesynth bundle" in line
    assert (tmp_path / "train" / "precious.py").read_text() == "x = 1\n"


def test_stick_not_mounted(audio, tmp_path, capsys):
    rc, line = run_cli(["new", "x", str(audio), "--stick", str(tmp_path)], capsys)
    assert rc == 1 and f"stick {str(tmp_path)!r} is not mounted" in line
    rc, line = run_cli(["new", "x", str(audio), "--stick", str(tmp_path / "no")], capsys)
    assert rc == 1 and "is not a directory (not mounted?)" in line


@pytest.fixture
def mounted(tmp_path):
    """mount(options) mounts a small tmpfs (needs root, as on CI) and unmounts it after."""
    points = []

    def mount(name: str, options: str) -> Path:
        at = tmp_path / name
        at.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(at)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {p.stderr.strip()}")
        points.append(at)
        return at

    yield mount
    for at in points:
        subprocess.run(["umount", "-l", str(at)], capture_output=True)


def test_stick_not_writable(audio, mounted, capsys):
    stick = mounted("ro", "ro,size=1m")
    rc, line = run_cli(["new", "x", str(audio), "--stick", str(stick)], capsys)
    assert rc == 1 and f"stick {str(stick)!r} is not writable: Read-only file system" in line


def test_full_disk_leaves_nothing_half_written(mounted):
    from tests.device.bundles import FIXTURE
    from train.new import NewError, publish

    disk = mounted("full", "size=48k")  # the tiny bundle is ~70 kB
    with pytest.raises(NewError, match=r"No space left on device; nothing was written"):
        publish(FIXTURE, disk / "mine")
    assert os.listdir(disk) == []  # no bundle, no staging folder


# -- a stick and --from ------------------------------------------------------------------
@pytest.fixture
def exfat_stick(tmp_path):
    """A 64 MB exFAT image on a loop device, mounted through exfat-fuse (the kernel here has
    no vfat; deploy/setup.sh dev installs exfat-fuse and exfatprogs).  Needs root."""
    for tool in ("mkfs.exfat", "mount.exfat-fuse", "losetup"):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in os.environ.get("PATH", "").split(":") + ["/sbin", "/usr/sbin"]):
            pytest.fail(f"{tool} is missing: deploy/setup.sh dev installs exfat-fuse, "
                        f"exfatprogs and mount")
    if os.geteuid() != 0:
        pytest.skip("loop devices and FUSE mounts need root (CI runs as root)")
    img, at = tmp_path / "stick.img", tmp_path / "STICK"
    subprocess.run(["truncate", "-s", "64M", str(img)], check=True)
    subprocess.run(["mkfs.exfat", "-L", "STICK", str(img)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(img)], check=True,
                         capture_output=True, text=True).stdout.strip()
    at.mkdir()
    try:
        subprocess.run(["mount.exfat-fuse", dev, str(at)], check=True, capture_output=True)
        yield at
    finally:
        subprocess.run(["umount", str(at)], capture_output=True)
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def test_stick_then_import_then_render(audio, exfat_stick, tmp_path):
    assert os.path.ismount(exfat_stick)
    rc = train_cli(["new", "onstick", str(audio), "--stick", str(exfat_stick), "--cache",
                    str(tmp_path / "cache"), *TINY])
    assert rc == 0
    assert sorted(os.listdir(exfat_stick / "aesynth")) == ["onstick", "onstick-report"]
    models = tmp_path / "models"
    assert aesynth(["import", str(exfat_stick), "--models-dir", str(models)]) == 0
    assert sorted(os.listdir(models / "onstick")) == ["decoder.tflite", "encoder.tflite",
                                                      "manifest.json"]
    wav = tmp_path / "played.wav"
    assert aesynth(["render", "--model", str(models / "onstick"), "--in",
                    str(audio / "take0.wav"), "--out", str(wav)]) == 0
    y, _ = sf.read(wav)
    assert np.all(np.isfinite(y)) and np.sqrt(np.mean(y ** 2)) > 1e-3


def test_weights_restored_from_a_bundle_match_its_tflite_models():
    from train.restore import dense_layers, restore_run

    default = Path(__file__).resolve().parents[2] / "models" / "default"
    run, bundle, check = restore_run(default)
    # float16 weights behind DEQUANTIZE: the restored Keras model is the same function
    assert check["encoder_snr_db"] > 60 and check["decoder_snr_db"] > 60
    shapes = [d.kernel.shape for d in dense_layers(bundle.encoder.content)]
    assert shapes == [(1025, 512), (512, 256), (256, 8)]


def test_default_start_is_models_default(made):
    default = Path(__file__).resolve().parents[2] / "models" / "default"
    b = read_bundle(made["bundle"])
    tr = b.manifest["training"]
    assert tr["new"]["from"] == str(default) and tr["recipe"]["hidden"] == [512, 256, 8]
    assert tr["new"]["restore_parity"]["encoder_snr_db"] > 60
    # it kept default's normaliser (the first layer expects its features)
    assert b.normaliser.to_dict() == read_bundle(default).normaliser.to_dict()
    assert tr["new"]["held_out"]["compare"]["model"] == "default"


def test_scratch_with_other_units(audio, tmp_path):
    rc = train_cli(["new", "four", str(audio), "--scratch", "--units", "4", "--out",
                    str(tmp_path), "--cache", str(tmp_path / "cache"), *TINY])
    assert rc == 0
    buf = io.StringIO()
    assert run_check([str(tmp_path / "four")], out=buf) == 0
    b = read_bundle(tmp_path / "four")
    assert b.units == 4 and b.manifest["training"]["recipe"]["hidden"] == [512, 256, 4]
    assert b.manifest["training"]["new"]["from"] is None


def test_from_and_units_exclude_each_other(audio, tmp_path, capsys):
    rc, line = run_cli(["new", "x", str(audio), "--units", "4", "--from", "models/default",
                        "--out", str(tmp_path)], capsys)
    assert rc == 1 and "--units cannot change a model fine-tuned with --from" in line


# -- dataset, fit and export take --audio -------------------------------------------------
def test_dataset_fit_export_take_audio(audio, tmp_path):
    from train.data import load_dataset

    cache = str(tmp_path / "cache")
    assert train_cli(["dataset", "--audio", str(audio), "--out", str(tmp_path / "ds"),
                      "--cache", cache, "--train", "50"]) == 0
    ds = load_dataset(tmp_path / "ds")
    assert ds.manifest["split"] == "file" and len(ds.train) == 50
    assert {t["id"] for t in ds.manifest["tracks"]} == {
        "take0.wav", "loops/take1.flac", "take2.ogg", "loops/take3.wav"}
    assert train_cli(["fit", "--audio", str(audio), "--cache", cache, "--recipe", "paper",
                      "--set", "epochs=1", "--out", str(tmp_path / "run")]) == 0
    assert train_cli(["export", str(tmp_path / "run"), "--audio", str(audio), "--cache", cache,
                      "--out", str(tmp_path / "b"), "--name", "viaaudio",
                      "--no-canonical"]) == 0
    assert run_check([str(tmp_path / "b")], out=io.StringIO()) == 0
    tracks = read_bundle(tmp_path / "b").manifest["training"]["data"]["tracks"]
    assert set(tracks["train"]) | set(tracks["test"]) | set(tracks["valid"]) == {
        "take0.wav", "loops/take1.flac", "take2.ogg", "loops/take3.wav"}


def test_fine_tuning_never_ends_worse_than_its_start_on_validation(audio, tmp_path):
    from train.fit import fit
    from train.restore import restore_run

    default = Path(__file__).resolve().parents[2] / "models" / "default"
    ds, _ = D.audio_dataset(D.probe_audio([audio]), frame=LOW_LATENCY, cache_dir=tmp_path)
    start, _, _ = restore_run(default)
    recipe = {**start.recipe, "epochs": 2, "patience": 0, "learning_rate": 3e-2}
    run = fit(ds, recipe, start=start)
    m = run.metrics
    kept = [np.array_equal(a, b) for a, b in zip(run.autoencoder.get_weights(),
                                                  start.autoencoder.get_weights(), strict=True)]
    if m["kept_start"]:  # a step this large usually overshoots: the start comes back
        assert all(kept)
    else:
        assert min(run.history["val_loss"]) < m["start_val_loss"] and not all(kept)


def test_a_fit_that_diverges_is_one_line_naming_the_learning_rate(audio, tmp_path):
    """A fresh fit whose loss turns NaN ends in a FitError (the CLI's one line), never in a
    run of NaN weights that export would turn into a bundle."""
    from device.errors import FitError
    from train.fit import RECIPES, fit

    ds, _ = D.audio_dataset(D.probe_audio([audio]), frame=LOW_LATENCY, cache_dir=tmp_path)
    recipe = {**RECIPES["paper"], "epochs": 2, "learning_rate": 1e30, "momentum": 0.0}
    with pytest.raises(FitError, match=r"diverged.*learning_rate 1e\+30; lower it"):
        fit(ds, recipe)


def test_the_playability_clip_is_long_enough_or_generate_mode_only():
    """10 s of 3.5 s files held out 0.35 s test clips, and the sweep then failed after the
    whole fit ("a measured signal must last at least settle_s + 0.37 s, got 0.35 s")."""
    from collections import namedtuple

    from train.baselines import Clip
    from train.new import _play_clips

    File = namedtuple("File", "path seconds")
    short = [{"path": "t.wav", "start": 2.0, "seconds": 0.35}]
    files = [File("a.wav", 3.5), File("b.wav", 6.0), File("c.wav", 3.5)]
    assert _play_clips(short, files, 2.5, Clip) == [Clip("b.wav", 0.0, 2.5)]
    held = [*short, {"path": "u.wav", "start": 1.0, "seconds": 3.0}]
    assert _play_clips(held, files, 2.5, Clip) == [Clip("u.wav", 1.0, 2.5)]
    assert _play_clips(short, [File("hit.wav", 1.5)], 2.5, Clip) == []
