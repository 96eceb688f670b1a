"""``aesynth-train new``: your own recordings in, a bundle the box plays out, one command.

    aesynth-train new NAME AUDIO... [--units N] [--recipe R] [--from BUNDLE]
                      [--out DIR | --stick MOUNTPOINT]

Steps, each with a progress bar (tqdm, on a terminal):

1. **find** the audio: files and folders (searched recursively), any format
   libsndfile reads; unreadable files are named, skipped and counted
   (:func:`train.data.probe_audio`);
2. **analyse**: magnitude frames through :mod:`device.sound.features`, cached
   by each file's SHA-256 and the frame (:func:`train.data.analyse_file`), so
   a second run with the same audio decodes nothing; split by file, or by
   time within one or two long files (:func:`train.data.audio_dataset`);
3. **fit** the recipe (default: the project's selected one, ``parts-sc``) with
   a budget that scales with the audio (:func:`budget`), or fine-tune from
   ``--from BUNDLE`` (its weights read back from its TFLite models,
   :mod:`train.restore`);
4. **export** (canonical units, TFLite, parity) to a staging bundle;
5. **evaluate** on the held-out split beside ``models/default`` (or the
   ``--from`` bundle) and PCA with as many units, through
   :mod:`train.baselines`;
6. **playability** through the real engine (:mod:`train.playability`);
7. **write**: the bundle atomically (built and fsynced beside its target,
   then swapped in: :func:`device.state.atomic.swap_dir`), then its report
   (Markdown and PNGs) beside it as ``NAME-report/``.  With ``--stick`` both
   go to ``MOUNTPOINT/aesynth/``, where ``aesynth import`` and the box's USB
   watcher look.

The manifest's ``training.sources`` lists every file trained on or held out
(name, seconds, SHA-256, split; never audio) and ``training.new`` the
figures.  Errors are one line (:class:`device.errors.DataError`,
:class:`NewError`); nothing is written at the destination until the bundle is
complete and checked.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import AesynthError, DataError
from device.models.bundle import _NAME_RE, MANIFEST, read_bundle
from device.models.library import STICK_FOLDER
from device.sound.features import LOW_LATENCY, FrameConfig
from device.state.atomic import fsync_tree, recover_swap, swap_dir
from train import data as D

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COMPARE = REPO / "models" / "default"
# The budget (see budget()): frames and frame-passes per second of audio.
TRAIN_FRAMES_PER_SECOND = 12.0
MAX_TRAIN_FRAMES = 60_000  # the shipped models' training set
PASSES_PER_SECOND = 250.0  # frame passes (level-augmented copies count) per second of audio
MIN_EPOCHS = 3
FINE_TUNE_LR_FACTOR = 0.3  # fine-tuning: 0.3 x the recipe's learning rate (1e-3 -> 3e-4)
# Fine-tuning: the log-magnitude term of sc_log at least this (models/default: 1.5).  On
# 30 min of wesnoth, 1.5 left the held-out LSD 0.10 dB worse than models/default's and
# 3.0 0.02 dB better (bench/train_bench.py; chosen on that same held-out set).
FINE_TUNE_FEATURE_WEIGHT = 3.0
EVAL_SECONDS = 60.0  # held-out audio evaluated per clip, at most
EVAL_TOTAL_SECONDS = 60.0  # frame-by-frame through TFLite, 3 models: keep it to a minute
PLAY_SECONDS = 2.5  # playability: generate and resynth seconds (> settle + 1); 2 x 34 renders
MAX_SOURCES_RECORDED = 2000  # keeps the manifest far below its 1 MiB cap


class NewError(AesynthError, ValueError):
    """A bad argument or destination of ``aesynth-train new`` (one line, no traceback)."""


# -- progress --------------------------------------------------------------------------
def bar(total: int | None, desc: str, unit: str = "it"):
    """A tqdm progress bar on stderr (silent when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None, leave=True,
                dynamic_ncols=True, file=sys.stderr)


def callback(b) -> callable:
    """A ``progress(i, n, message)`` for train.data that drives tqdm bar ``b``."""
    def progress(i: int, n: int, message: str) -> None:
        if b.total != n:
            b.total = n
        b.n = i
        b.set_postfix_str(message[-40:], refresh=False)
        b.refresh()
    return progress


def epoch_bar(epochs: int):
    """A Keras callback showing one tqdm step per epoch, with the losses."""
    import keras

    class EpochBar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = bar(epochs, "fit", "epoch")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()
                                  if k in ("loss", "val_loss")}, refresh=False)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochBar()


# -- destination -----------------------------------------------------------------------
def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise NewError(f"NAME must be 1-64 characters [A-Za-z0-9._-], starting with a letter "
                       f"or digit, got {name!r}")
    return name


def check_stick(mountpoint: str | os.PathLike) -> Path:
    """``MOUNTPOINT/aesynth``, after checking the stick is mounted and writable."""
    m = Path(mountpoint)
    if not m.is_dir():
        raise NewError(f"stick {os.fspath(m)!r} is not a directory (not mounted?)")
    if not os.path.ismount(m):
        raise NewError(f"stick {os.fspath(m)!r} is not mounted (not a mount point); mount "
                       f"the stick and pass its mount point")
    folder = m / STICK_FOLDER
    try:
        folder.mkdir(exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".aesynth-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise NewError(f"stick {os.fspath(m)!r} is not writable: "
                       f"{e.strerror or e}") from None
    return folder


def check_out(folder: Path, name: str) -> Path:
    """``folder/name``, refusing to replace anything that is not a bundle."""
    target = folder / name
    recover_swap(target)
    for t in (target, folder / f"{name}-report"):
        if t.exists() and not (t.is_dir() and ((t / MANIFEST).exists()
                                               or (t / "report.md").exists())):
            raise NewError(f"{os.fspath(t)!r} exists and is not an aesynth bundle or report; "
                           f"refusing to replace it (choose another NAME or --out)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NewError(f"cannot create output folder {os.fspath(folder)!r}: "
                       f"{e.strerror or e}") from None
    if not os.access(folder, os.W_OK):
        raise NewError(f"output folder {os.fspath(folder)!r} is not writable")
    return target


def publish(staged: Path, target: Path) -> None:
    """Copy the staged bundle beside ``target``, check it with the device's reader,
    fsync it and swap it in; on any failure (a full disk) remove the copy and raise
    :class:`NewError`: the destination holds the old bundle or nothing."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) \
        if target.parent.is_dir() else None
    try:
        if tmp is None:
            raise FileNotFoundError(2, "No such directory", os.fspath(target.parent))
        for f in sorted(staged.iterdir()):
            shutil.copyfile(f, tmp / f.name)
        read_bundle(tmp)
        fsync_tree(tmp)
        swap_dir(tmp, target)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise NewError(f"cannot write bundle {os.fspath(target)!r}: {e.strerror or e}; "
                       f"nothing was written") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_report(files: Path, target: Path) -> None:
    """The report folder, the same way (whole or not at all)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for f in sorted(files.iterdir()):
            shutil.copyfile(f, tmp / f.name)
        fsync_tree(tmp)
        swap_dir(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise NewError(f"the bundle is written, but its report {os.fspath(target)!r} is not: "
                       f"{e.strerror or e}") from None


# -- the budget ------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    train_frames: int
    epochs: int
    passes: int

    def to_dict(self) -> dict[str, int]:
        return {"train_frames": self.train_frames, "epochs": self.epochs,
                "passes": self.passes}


def budget(seconds: float, recipe: dict[str, Any], *, frames: int | None = None,
           epochs: int | None = None) -> Budget:
    """Training frames and epochs for ``seconds`` of audio: fit time scales with the audio.

    ``TRAIN_FRAMES_PER_SECOND`` frames per second of audio (at most
    ``MAX_TRAIN_FRAMES``), and ``PASSES_PER_SECOND`` frame passes per second
    of audio (an augmented copy is a pass too) shared out as epochs, between
    ``MIN_EPOCHS`` and the recipe's own (10 epochs at 12 frames a second).
    Chosen from the slowest rate measured here, 0.75 ms a pass (parts-sc, the
    2 cores shared, load ~4.5): ~0.19 s of fitting per second of audio, so
    30 min -> ~6 min and 3 min -> ~35 s leave the other steps room under the
    targets (10 and 2 min); bench/train_bench.py then measured 0.22 ms a pass
    (load 4-10).  ``frames`` and ``epochs`` override (tests, benches).
    """
    n = frames if frames is not None else int(
        min(MAX_TRAIN_FRAMES, max(1, round(TRAIN_FRAMES_PER_SECOND * seconds))))
    copies = 2 if recipe.get("augment_db") else 1
    if epochs is None:
        epochs = int(np.clip(round(PASSES_PER_SECOND * seconds / (n * copies)), MIN_EPOCHS,
                             int(recipe["epochs"])))
    return Budget(int(n), int(epochs), int(n * copies * epochs))


# -- the pipeline ----------------------------------------------------------------------
def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aesynth" / "analysis"


def new(name: str, audio: list[str], *, units: int | None = None, recipe: str | None = None,
        start_from: str | None = None, scratch: bool = False,
        out: str | None = None, stick: str | None = None,
        cache_dir: str | os.PathLike | None = None, frames: int | None = None,
        epochs: int | None = None, seed: int = 0, quantization: str = "float16",
        compare: str | None = None, play_seconds: float = PLAY_SECONDS) -> dict[str, Any]:
    """Run every step (module docstring); return the summary (also in the manifest).

    With no ``start_from``, ``recipe`` or ``units`` the model is fine-tuned from
    ``models/default`` (measured better than from scratch within the same
    budget, bench/train_bench.py); ``scratch`` trains the recipe from random
    weights instead.

    Raises :class:`NewError` or :class:`device.errors.DataError` with one line for
    bad input; the destination is untouched unless the bundle was written whole.
    """
    t_all = time.monotonic()
    timings: dict[str, float] = {}
    name = check_name(name)
    if out is not None and stick is not None:
        raise NewError("pass --out DIR or --stick MOUNTPOINT, not both")
    folder = check_stick(stick) if stick else Path(out if out is not None else ".")
    target = check_out(folder, name)
    if units is not None and not 1 <= units <= 4096:
        raise NewError(f"--units must be in 1..4096, got {units}")
    if scratch and start_from is not None:
        raise NewError("--scratch and --from exclude each other: drop one")
    if (start_from is None and not scratch and units is None and recipe is None
            and (DEFAULT_COMPARE / MANIFEST).exists()):
        start_from = os.fspath(DEFAULT_COMPARE)
    if start_from is not None and units is not None:
        raise NewError("--units cannot change a model fine-tuned with --from (its units are "
                       "the bundle's); drop one, or add --scratch")
    cache = Path(cache_dir) if cache_dir else default_cache()
    t = time.monotonic()
    with bar(None, "find", "file") as b:
        found = D.probe_audio(audio, progress=callback(b))
    timings["find"] = time.monotonic() - t
    if found.seconds < D.MIN_AUDIO_SECONDS:  # before TensorFlow: a quick answer
        raise DataError(f"too little audio: need at least {D.MIN_AUDIO_SECONDS:g} s, found "
                        f"{found.seconds:.2f} s in {len(found.files)} file(s) under "
                        f"{', '.join(repr(os.fspath(p)) for p in audio)}")
    from train.fit import DEFAULT_RECIPE, RECIPES  # TensorFlow is imported from here on

    start = None
    if start_from is not None:
        if recipe is not None:
            raise NewError("--recipe cannot change a model fine-tuned with --from (the recipe "
                           "is the bundle's); drop one")
        from train.restore import restore_run

        t = time.monotonic()
        with bar(1, "restore") as b:
            try:
                start, from_bundle, restore_check = restore_run(start_from)
            except AesynthError as e:
                raise NewError(f"--from {start_from!r}: {e}") from None
            b.update(1)
        timings["restore"] = time.monotonic() - t
        rec = dict(start.recipe)
        # smaller steps than from scratch: Adam starts without the start's moments
        rec["learning_rate"] = float(rec["learning_rate"]) * FINE_TUNE_LR_FACTOR
        if rec.get("loss") in ("sc_log", "mixed"):
            rec["feature_weight"] = max(float(rec.get("feature_weight", 0.0)),
                                        FINE_TUNE_FEATURE_WEIGHT)
        frame = from_bundle.frame
    else:
        rname = recipe or DEFAULT_RECIPE
        if rname not in RECIPES:
            raise NewError(f"--recipe must be one of {', '.join(RECIPES)}, got {rname!r}")
        rec = dict(RECIPES[rname])
        if units is not None:
            rec["hidden"] = list(rec["hidden"][:-1]) + [int(units)]
        frame = LOW_LATENCY
        restore_check = None

    bud = budget(found.seconds, rec, frames=frames, epochs=epochs)
    t = time.monotonic()
    with bar(len(found.files), "analyse", "file") as b:
        ds, info = D.audio_dataset(found, frame=frame, cache_dir=cache,
                                   max_train=bud.train_frames, seed=seed,
                                   progress=callback(b))
    timings["analyse"] = time.monotonic() - t
    # the budget again, on the frames there really are (short audio has fewer)
    bud = budget(found.seconds, rec, frames=len(ds.train), epochs=epochs)
    rec.update(epochs=bud.epochs, name=f"{rec['name']}-new" if start is None
               else f"{rec['name']}-from-{from_bundle.name}")
    log.info("%d files, %.1f s of audio; %s split; %d/%d/%d frames; %d epochs",
             len(found.files), found.seconds, info["split"], len(ds.train), len(ds.valid),
             len(ds.test), bud.epochs)

    from train.fit import fit

    t = time.monotonic()
    run = fit(ds, rec, seed=seed, start=start, callbacks=[epoch_bar(bud.epochs)])
    timings["fit"] = time.monotonic() - t

    work = Path(tempfile.mkdtemp(prefix=f"aesynth-new-{name}-"))
    try:
        return _finish(name, run, ds, info, found, bud, frame, work, target, timings, t_all,
                       quantization=quantization, start_from=start_from,
                       restore_check=restore_check, compare=compare,
                       play_seconds=play_seconds, cache=cache)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _finish(name, run, ds, info, found, bud, frame, work, target, timings, t_all, *,
            quantization, start_from, restore_check, compare, play_seconds, cache):
    from train.export import export_bundle

    staged = work / "bundle" / name
    report_dir = work / "report"
    report_dir.mkdir(parents=True)
    t = time.monotonic()
    with bar(1, "export") as b:
        desc = (f"{run.units} units, {run.recipe['name']}, trained on "
                f"{len(found.files)} file(s), {found.seconds / 60:.1f} min of your audio")
        chatter = io.StringIO()  # the TFLite converter prints "Saved artifact ..." lines
        with contextlib.redirect_stdout(chatter):
            export = export_bundle(run, staged, name=name, frame=frame,
                                   quantization=quantization, train_mags=ds.train,
                                   test_mags=ds.test, description=desc)
        log.debug("converter: %s", chatter.getvalue())
        b.update(1)
    timings["export"] = time.monotonic() - t

    clips = _eval_clips(info["clips"]["test"])
    cmp_path = compare if compare is not None else (
        start_from if start_from is not None else
        (os.fspath(DEFAULT_COMPARE) if (DEFAULT_COMPARE / MANIFEST).exists() else None))
    from concurrent.futures import ThreadPoolExecutor

    from train.baselines import Clip
    from train.playability import playability
    from train.playability import write_report as write_play

    def evaluate() -> dict[str, Any]:
        t = time.monotonic()
        with bar(len(clips), "evaluate", "clip") as b:
            out = evaluate_held_out(staged, cmp_path, ds, clips, frame, run.global_max,
                                    progress=lambda: b.update(1))
            plot_held_out(staged, clips[0], report_dir / "spectrogram.png")
        timings["evaluate"] = time.monotonic() - t
        return out

    # evaluation, and playability's two modes, side by side: the fit is done and both
    # cores are free; TFLite and numpy's FFT release the GIL (about 1.5x on 2 cores)
    t_both = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluate") as pool:
        held_out_f = pool.submit(evaluate)
        t = time.monotonic()
        with bar(1, "playability") as b:
            play = playability(staged, _play_clips(clips, found.files, play_seconds, Clip),
                               generate_seconds=play_seconds, threads=2)
            b.update(1)
        timings["playability"] = time.monotonic() - t
        held_out = held_out_f.result()  # before plotting again: pyplot is not thread-safe
    write_play(play, report_dir)
    timings["evaluate+playability"] = time.monotonic() - t_both

    figures = {"audio_seconds": round(found.seconds, 2), "files": len(found.files),
               "skipped": [{"name": os.path.basename(p), "why": w} for p, w in
                           found.skipped + [(p, w) for p, w in info["unreadable"]]],
               "ignored_by_name": found.ignored, "split": info["split"],
               "frames": ds.manifest["counts"], "budget": bud.to_dict(),
               "analysis": {"analysed": info["analysed"], "cached": info["cached"]},
               "from": start_from, "restore_parity": restore_check,
               "kept_start": run.metrics.get("kept_start"),
               "held_out": held_out,
               "playability": {k: v["pass"] for k, v in play["criteria"].items()},
               "seconds": {k: round(v, 1) for k, v in timings.items()}}
    split_of = {}
    for r in ds.manifest["tracks"]:
        split_of.setdefault(r["id"], []).append(r["split"])
    sources = [{**f.record(), "split": "+".join(dict.fromkeys(split_of.get(f.name, [])))}
               for f in found.files]
    _amend_manifest(staged, sources, figures)
    t = time.monotonic()
    with bar(1, "write") as b:
        publish(staged, target)
        b.update(1)
    timings["write"] = time.monotonic() - t
    figures["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    figures["seconds"]["total"] = round(time.monotonic() - t_all, 1)
    write_report(report_dir, name, run, ds, found, figures, sources, export, play)
    publish_report(report_dir, target.parent / f"{name}-report")
    return {"bundle": os.fspath(target), "report": os.fspath(target.parent /
                                                              f"{name}-report" / "report.md"),
            **figures}


def _play_clips(clips: list[dict], files: list, seconds: float, clip_type: type) -> list:
    """The resynth clip of the playability sweep: ``seconds`` of held-out audio when a
    held-out clip is that long, else of the longest file of the user's audio (the sweep
    measures how the units play, not how well unseen audio is reconstructed); none when
    every file is shorter (a set of one-shot samples): then generate mode only, and the
    report says so.  A sweep needs seconds > settle + 1 s of signal (train.playability)."""
    long_clips = [c for c in clips if c["seconds"] >= seconds]
    if long_clips:
        c = long_clips[0]
        return [clip_type(c["path"], c["start"], seconds)]
    longest = max(files, key=lambda f: f.seconds, default=None)
    if longest is not None and longest.seconds >= seconds:
        return [clip_type(longest.path, 0.0, seconds)]
    log.info("playability: no file lasts %.1f s; resynth mode not swept", seconds)
    return []


def _eval_clips(test: list[dict]) -> list[dict]:
    """Held-out clips, each at most EVAL_SECONDS, EVAL_TOTAL_SECONDS together."""
    out, total = [], 0.0
    for c in test:
        s = min(c["seconds"], EVAL_SECONDS, EVAL_TOTAL_SECONDS - total)
        if s <= 0.2:
            break
        out.append({**c, "seconds": s})
        total += s
    return out


def evaluate_held_out(bundle_path, compare: str | None, ds, clips: list[dict],
                      frame: FrameConfig, global_max: float, progress=None
                      ) -> dict[str, Any]:
    """SC, LSD, MSE (paper) and SNR of the new bundle, the comparison bundle and PCA
    with as many units, on the held-out clips (all at this model's ``global_max``)."""
    from train.baselines import BundleModel, PCASpectrum, score_audio

    new = BundleModel(bundle_path, frame)
    methods: dict[str, Any] = {"new": new}
    if compare:
        try:
            methods["compare"] = BundleModel(compare, frame)
        except AesynthError as e:
            log.warning("not comparing with %s: %s", compare, e)
    if len(ds.train) > new.units:
        methods["pca"] = PCASpectrum(np.asarray(ds.train, np.float64), amplitude="log",
                                     units=new.units, global_max=global_max)
    per: dict[str, list[dict[str, float]]] = {k: [] for k in methods}
    for c in clips:
        x = D.load_audio(c["path"], frame.sample_rate, start_s=c["start"],
                         seconds=c["seconds"]).astype(np.float64)
        if len(x) >= frame.win_length:
            for k, m in methods.items():
                per[k].append(score_audio(m, x, frame, global_max))
        if progress:
            progress()
    out: dict[str, Any] = {"clips": [{"name": c["name"], "start": round(c["start"], 2),
                                      "seconds": round(c["seconds"], 2)} for c in clips]}
    for k, rows in per.items():
        if rows:
            out[k] = {m: float(np.mean([r[m] for r in rows])) for m in rows[0]}
            out[k]["model"] = (getattr(methods[k], "bundle", None).name
                               if hasattr(methods[k], "bundle") else methods[k].name)
    return out


def _amend_manifest(staged: Path, sources: list[dict], figures: dict) -> None:
    """Add the sources and figures to the staged manifest (model checksums untouched)."""
    path = staged / MANIFEST
    m = json.loads(path.read_text())
    m["training"]["sources"] = sources[:MAX_SOURCES_RECORDED]
    if len(sources) > MAX_SOURCES_RECORDED:
        m["training"]["sources_not_listed"] = len(sources) - MAX_SOURCES_RECORDED
    m["training"]["new"] = figures
    # the dataset record already lists names per split; full paths stay off the stick
    data = m["training"].get("data")
    if isinstance(data, dict):
        data.pop("paths", None)
    path.write_text(json.dumps(m, indent=1) + "\n")
    read_bundle(staged)


def write_report(d: Path, name: str, run, ds, found, fig: dict, sources: list[dict],
                 export: dict, play: dict) -> None:
    """``report.md`` with the pictures: spectrograms of a held-out clip, training curves,
    playability; ``new.json`` with every figure."""
    from train.evaluate import plot_curves

    curves = plot_curves(run.history, d / "training_curves.png")
    ho = fig["held_out"]
    L = [f"# `{name}`: your own sound", "",
         f"{fig['files']} file(s), {fig['audio_seconds'] / 60:.1f} min of audio, split by "
         f"{fig['split']}; {fig['frames']['train']} training frames, "
         f"{fig['budget']['epochs']} epochs budgeted ({run.metrics.get('epochs_run', '?')} run); "
         f"recipe `{run.recipe['name']}`, {run.units} units"
         + (f", fine-tuned from `{fig['from']}`" if fig["from"] else "") + ".", "",
         *([f"**No epoch of fine-tuning beat the starting model on the validation split "
            f"(loss {run.metrics['start_val_loss']:.4g}), so this bundle keeps the starting "
            f"model's weights.** More audio, or `--scratch`, may do better.", ""]
           if run.metrics.get("kept_start") else []),
         "Seconds per step: " + ", ".join(f"{k} {v}" for k, v in fig["seconds"].items())
         + f"; analysis: {fig['analysis']['analysed']} file(s) analysed, "
           f"{fig['analysis']['cached']} from the cache.", "",
         "## Held-out audio", "",
         "Spectral convergence and log-spectral distance (dB, lower is better) and SNR of the "
         "resynthesis with the input phase, on audio the model did not train on: "
         + ", ".join(f"{c['name']} ({c['seconds']:.1f} s from {c['start']:.1f} s)"
                     for c in ho["clips"]) + ".", "",
         "| model | SC dB | LSD dB | SNR dB |", "|---|---|---|---|"]
    for k in ("new", "compare", "pca"):
        if k in ho:
            label = {"new": f"**{name}** (new)", "compare": f"`{ho[k]['model']}`",
                     "pca": f"PCA, {run.units} components (log)"}[k]
            L.append(f"| {label} | {ho[k]['sc_db']:.2f} | {ho[k]['lsd_db']:.2f} | "
                     f"{ho[k]['snr_db']:.2f} |")
    L += ["", "## Sources", "", "| file | seconds | split | SHA-256 |", "|---|---|---|---|"]
    for s in sources[:200]:
        L.append(f"| {s['name']} | {s['seconds']:.1f} | {s['split']} | `{s['sha256'][:16]}…` |")
    if len(sources) > 200:
        L.append(f"| … {len(sources) - 200} more (all in the manifest) | | | |")
    if fig["skipped"] or fig["ignored_by_name"]:
        L += ["", f"Skipped {len(fig['skipped'])} unreadable file(s); ignored "
              f"{fig['ignored_by_name']} file(s) in folders whose names are not audio names.",
              ""]
        L += [f"- {s['name']}: {s['why']}" for s in fig["skipped"][:50]]
    L += ["", "## Pictures", ""]
    if curves:
        L += ["![training curves](training_curves.png)", ""]
    if (d / "spectrogram.png").exists():
        L += ["![held-out spectrogram](spectrogram.png)", ""]
    L += ["## Playability", "", (d / "playability.md").read_text()]
    L += ["## Export", "", f"Quantisation {export['quantization']}; SC loss from float32 "
          f"{export['quantization_sc_loss_db']:.3f} dB; parity encoder "
          f"{export['parity']['encoder']['snr_db']:.1f} dB, decoder "
          f"{export['parity']['decoder']['snr_db']:.1f} dB SNR.", ""]
    (d / "report.md").write_text("\n".join(L))
    (d / "new.json").write_text(json.dumps(fig, indent=1, default=float) + "\n")


def plot_held_out(bundle_path: Path, clip: dict, path: Path) -> None:
    """The paper's Figure 2 (original over reconstruction) of a held-out clip."""
    from train.evaluate import evaluate_audio, plot_spectrograms

    bundle = read_bundle(bundle_path)
    x = D.load_audio(clip["path"], bundle.frame.sample_rate, start_s=clip["start"],
                     seconds=min(clip["seconds"], 12.0))
    if len(x) < bundle.frame.win_length:
        return
    _, arrays = evaluate_audio(bundle, x)
    plot_spectrograms(arrays["mags"], arrays["pred"], bundle, path, title=clip["name"])
