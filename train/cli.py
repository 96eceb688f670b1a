"""``aesynth-train``: build datasets, fit, reproduce the paper, export and evaluate.

    aesynth-train new NAME AUDIO... [--units N] [--recipe R] [--from BUNDLE]
                      [--out DIR | --stick MOUNTPOINT]
    aesynth-train dataset --frame low-latency --out cache/datasets/low_latency [--install]
    aesynth-train dataset --audio PATH... --out DIR     (your own recordings)
    aesynth-train fit --data DIR --recipe NAME [--set key=JSON ...] --out RUN_DIR
    aesynth-train export RUN_DIR --data DIR --out BUNDLE --name NAME [--quantization Q]
    aesynth-train evaluate BUNDLE AUDIO... --json OUT [--report DIR]
    aesynth-train reproduce --data DIR --out DIR [--epochs N]
    aesynth-train runs RUN_DIR...
    aesynth-train baselines --data DIR [--audio FILE...] [--units N...] [--bundle PATH...]
    aesynth-train playability BUNDLE [AUDIO...] --report DIR

TensorFlow is imported only by the subcommands that need it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from device.sound.features import LOW_LATENCY, PAPER

FRAMES = {"low-latency": LOW_LATENCY, "paper": PAPER}
log = logging.getLogger("aesynth-train")


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal)."""

    def __init__(self, stream=None):
        # looked up per bar, not at import: a test's captured stderr may be closed by now
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty()

    def __call__(self, i: int, n: int, message: str) -> None:
        width = 30
        done = int(width * i / max(n, 1))
        line = f"[{'#' * done}{'.' * (width - done)}] {i}/{n} {message}"
        if self.tty:
            self.stream.write("\r" + line[:100].ljust(100))
            if i >= n:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _parse_set(items: list[str]) -> dict:
    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants key=JSON, got {item!r}")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    return changes


def _audio_dataset(a: argparse.Namespace, max_train: int | None):
    """The dataset of ``--audio`` (analysis cached like ``new``'s), in memory."""
    from train.data import audio_dataset, probe_audio
    from train.new import default_cache

    found = probe_audio(a.audio)
    for path, why in found.skipped:
        log.warning("skipped %s: %s", path, why)
    ds, _ = audio_dataset(found, frame=FRAMES[a.frame], cache_dir=a.cache or default_cache(),
                          max_train=max_train, seed=a.seed, progress=_Progress())
    return ds


def _dataset_of(a: argparse.Namespace):
    from train.data import load_dataset

    return _audio_dataset(a, None) if a.audio else load_dataset(a.data)


def cmd_new(a: argparse.Namespace) -> int:
    from train.new import new

    summary = new(a.name, a.audio, units=a.units, recipe=a.recipe, start_from=a.start_from,
                  scratch=a.scratch, out=a.out, stick=a.stick, cache_dir=a.cache, frames=a.frames,
                  epochs=a.epochs, seed=a.seed, quantization=a.quantization,
                  compare=a.compare, play_seconds=a.play_seconds)
    ho = summary["held_out"]
    line = {"bundle": summary["bundle"], "report": summary["report"],
            "audio_seconds": summary["audio_seconds"], "files": summary["files"],
            "skipped": len(summary["skipped"]), "analysis": summary["analysis"],
            "held_out_sc_db": {k: round(ho[k]["sc_db"], 2) for k in ("new", "compare", "pca")
                               if k in ho},
            "seconds": summary["seconds"]}
    print(json.dumps(line))
    return 0


def cmd_dataset(a: argparse.Namespace) -> int:
    from train.data import build_dataset

    if a.audio:
        from train.data import write_audio_dataset

        ds = _audio_dataset(a, a.train)
        write_audio_dataset(a.out, ds)
        print(json.dumps({"out": str(a.out), **ds.manifest["counts"],
                          "split": ds.manifest["split"]}))
        return 0
    counts = {"train": a.train, "valid": a.valid, "test": a.test}
    ds = build_dataset(a.out, frame=FRAMES[a.frame], sources=a.sources, counts=counts,
                       seed=a.seed, install=a.install, max_tracks=a.max_tracks,
                       max_seconds=a.max_seconds, progress=_Progress())
    print(json.dumps({"out": str(a.out), **ds.manifest["counts"]}))
    return 0


def cmd_fit(a: argparse.Namespace) -> int:
    from train.data import load_dataset
    from train.fit import DEFAULT_RECIPE, RECIPES, fit, save_run
    from train.models import recipe_with

    start = None
    if a.start is not None:
        from train.fit import load_run

        if a.recipe is not None:
            raise SystemExit("--recipe and --start: a continued run keeps its start's recipe "
                             "(change it with --set)")
        try:
            start = load_run(a.start)
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"--start {str(a.start)!r}: not a saved run ({e})") from None
        recipe = recipe_with(start.recipe, **_parse_set(a.set))
    else:
        name = a.recipe or DEFAULT_RECIPE
        if name not in RECIPES:
            raise SystemExit(f"--recipe must be one of {', '.join(RECIPES)}, got {name!r}")
        recipe = recipe_with(RECIPES[name], **_parse_set(a.set))
    run = fit(_audio_dataset(a, None) if a.audio else load_dataset(a.data), recipe,
              seed=a.seed, verbose=a.keras_verbose, start=start)
    if start is not None:  # the run's whole history: what it continued, and for how long
        run.metrics["continued_from"] = {"run": str(a.start),
                                         "recipe": start.recipe,
                                         "epochs_run": start.metrics.get("epochs_run"),
                                         **({"continued_from": start.metrics["continued_from"]}
                                            if "continued_from" in start.metrics else {})}
    save_run(run, a.out)
    print(json.dumps({"out": str(a.out), "valid": run.metrics["valid"],
                      "test": run.metrics["test"], "seconds": round(run.seconds, 1)}))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from train.export import export_bundle
    from train.fit import load_run

    run = load_run(a.run)
    ds = _dataset_of(a)
    if a.compare_quantizations:
        from train.export import compare_quantizations

        print(json.dumps(compare_quantizations(run, ds.train, ds.test)))
    report = export_bundle(run, a.out, name=a.name, frame=ds.frame, quantization=a.quantization,
                           train_mags=ds.train, test_mags=ds.test, description=a.description,
                           canonical=a.canonical)
    print(json.dumps({"out": str(a.out), **{k: report[k] for k in (
        "quantization", "parity", "bytes", "quantization_sc_loss_db")},
        "test": report[f"test_{a.quantization}"]}))
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from train.evaluate import evaluate, write_json

    result = evaluate(a.bundle, a.audio, report_dir=a.report, seconds=a.seconds)
    write_json(result, a.json)
    print(json.dumps(result["mean"]))
    return 0


def cmd_reproduce(a: argparse.Namespace) -> int:
    from train.reproduce import reproduce

    reproduce(a.data, a.out, epochs=a.epochs, seed=a.seed, quick=a.quick)
    return 0


def cmd_runs(a: argparse.Namespace) -> int:
    from train.reproduce import runs_table

    print(runs_table(sorted(a.runs)), end="")
    return 0


def _clips(a: argparse.Namespace, files: list[str]):
    from train.baselines import Clip

    return [Clip(str(f), a.start, a.seconds) for f in files]


def cmd_baselines(a: argparse.Namespace) -> int:
    from train.baselines import markdown, run_baselines, write

    res = run_baselines(a.data, audio=_clips(a, a.audio), units=a.units, bundles=a.bundle,
                        amplitudes=a.amplitudes,
                        fit_frames=a.fit_frames, test_frames=a.test_frames,
                        perceptual=a.perceptual, perceptual_seconds=a.perceptual_seconds)
    write(res, json_path=a.json, markdown_path=a.markdown)
    print(markdown(res), end="")
    return 0


def cmd_playability(a: argparse.Namespace) -> int:
    from train.playability import playability, write_report

    res = playability(a.bundle, _clips(a, a.audio), generate_seconds=a.generate_seconds,
                      phase=a.phase)
    paths = write_report(res, a.report)
    print(paths["markdown"].read_text(), end="")
    return 0


def cmd_figures(a: argparse.Namespace) -> int:
    from device.models.bundle import read_bundle
    from device.state.atomic import read_json
    from train.figures import record, summarise

    def doc(path: Path | None) -> dict | None:
        if path is None:
            return None
        from device.errors import EvaluationError

        obj, err = read_json(path, max_bytes=64 << 20)
        if obj is None:
            raise EvaluationError(err or f"{str(path)!r} does not exist")
        if not isinstance(obj, dict):
            raise EvaluationError(f"{str(path)!r} holds no JSON object")
        return obj

    b = read_bundle(a.bundle)
    ev = summarise(b.name, b.units, doc(a.baselines), doc(a.playability), doc(a.perceptual))
    record(a.bundle, ev)
    print(json.dumps(ev, indent=1))
    return 0


def _clip_args(p: argparse.ArgumentParser, seconds: float) -> None:
    p.add_argument("--start", type=float, default=0.0, help="seconds into each audio file")
    p.add_argument("--seconds", type=float, default=seconds,
                   help=f"seconds of each audio file (default {seconds:g})")


def _audio_args(p: argparse.ArgumentParser, *, frame: bool = False, seed: bool = False) -> None:
    p.add_argument("--audio", nargs="+", default=None, metavar="PATH",
                   help="your own audio files and folders instead of the Debian sources / "
                        "--data (split by file, or by time in one long file; analysis cached)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="analysis cache for --audio (default ~/.cache/aesynth/analysis)")
    if frame:
        p.add_argument("--frame", choices=FRAMES, default="low-latency",
                       help="frame of the --audio analysis (default low-latency)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="--audio split seed (as fit's)")


def build_parser() -> argparse.ArgumentParser:
    from train.baselines import AMPLITUDES
    from train.data import DEFAULT_SOURCES, PAPER_COUNTS, SOURCES
    from train.export import EXPORT_QUANTIZATIONS

    p = argparse.ArgumentParser(prog="aesynth-train",
                                description="Train autoencoders on music spectra for aesynth.")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    n = sub.add_parser("new", help="your own recordings -> a bundle the box plays, one command",
                       description="Find, analyse (cached), fit, export, evaluate and measure "
                       "a model of your own audio; write the bundle and its report.")
    n.add_argument("name", help="the model's name (bundle folder): [A-Za-z0-9._-]")
    n.add_argument("audio", nargs="+", metavar="AUDIO",
                   help="audio files and folders (searched recursively): WAV, FLAC, Ogg, "
                        "Opus, MP3... mono or stereo, any sample rate")
    n.add_argument("--units", type=int, default=None,
                   help="units (faders) of a model trained from scratch (default: the "
                        "recipe's, 8)")
    n.add_argument("--recipe", default=None,
                   help="train this recipe of train/fit.py RECIPES from scratch (parts-sc is "
                        "models/default's)")
    start = n.add_mutually_exclusive_group()
    start.add_argument("--from", dest="start_from", default=None, metavar="BUNDLE",
                       help="fine-tune from this bundle (its recipe, units and frame; "
                            "default: models/default unless --recipe, --units or --scratch)")
    start.add_argument("--scratch", action="store_true",
                       help="train from random weights (parts-sc unless --recipe)")
    where = n.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, metavar="DIR",
                       help="write DIR/NAME and DIR/NAME-report (default: the current folder)")
    where.add_argument("--stick", default=None, metavar="MOUNTPOINT",
                       help="write to a mounted USB stick's aesynth/ folder")
    n.add_argument("--cache", default=None, metavar="DIR",
                   help="analysis cache (default ~/.cache/aesynth/analysis)")
    n.add_argument("--frames", type=int, default=None,
                   help="training frames (default: 12 per second of audio, at most 60000)")
    n.add_argument("--epochs", type=int, default=None,
                   help="epochs (default: a budget of 250 frame passes per second of audio)")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--quantization", choices=EXPORT_QUANTIZATIONS, default="float16")
    n.add_argument("--compare", default=None, metavar="BUNDLE",
                   help="judge beside this bundle on the held-out audio (default: the --from "
                        "bundle, else models/default)")
    n.add_argument("--play-seconds", type=float, default=2.5,
                   help="seconds of each playability render (default 2.5)")
    n.set_defaults(func=cmd_new)

    d = sub.add_parser("dataset", help="frames from real recordings, split by track")
    d.add_argument("--frame", choices=FRAMES, default="low-latency")
    d.add_argument("--out", type=Path, default=Path("cache/datasets/low_latency"))
    d.add_argument("--sources", nargs="+", default=list(DEFAULT_SOURCES), choices=SOURCES)
    _audio_args(d)
    for s, n in PAPER_COUNTS.items():
        d.add_argument(f"--{s}", type=int, default=n, help=f"frames (default {n})")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--install", action="store_true",
                   help="apt-get install missing music packages")
    d.add_argument("--max-tracks", type=int, default=None)
    d.add_argument("--max-seconds", type=float, default=None, help="per track")
    d.set_defaults(func=cmd_dataset)

    f = sub.add_parser("fit", help="train one recipe; writes run.json + weights")
    f.add_argument("--data", type=Path, default=Path("cache/datasets/low_latency"))
    f.add_argument("--start", type=Path, default=None, metavar="RUN",
                   help="continue this saved run's weights (its normaliser and recipe, "
                        "changed by --set); the run records what it continued")
    f.add_argument("--recipe", default=None,
                   help="a recipe of train/fit.py RECIPES (default: models/default's)")
    f.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a recipe field, e.g. --set epochs=5 --set hidden=[16]")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--keras-verbose", type=int, default=0)
    _audio_args(f, frame=True)
    f.set_defaults(func=cmd_fit)

    e = sub.add_parser("export", help="TFLite encoder/decoder + bundle")
    e.add_argument("run", type=Path)
    e.add_argument("--data", type=Path, default=Path("cache/datasets/low_latency"))
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--name", required=True)
    e.add_argument("--quantization", choices=EXPORT_QUANTIZATIONS, default="dynamic")
    e.add_argument("--description", default="")
    e.add_argument("--no-canonical", dest="canonical", action="store_false",
                   help="keep the units' trained signs and order, no labels "
                        "(default: flip inhibitory units, order by effect, label)")
    e.add_argument("--compare-quantizations", action="store_true",
                   help="first print test metrics of every quantisation (JSON)")
    _audio_args(e, frame=True, seed=True)
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("evaluate", help="metrics, spectrograms and a report on any audio")
    v.add_argument("bundle")
    v.add_argument("audio", nargs="+")
    v.add_argument("--json", type=Path, required=True)
    v.add_argument("--report", type=Path, default=None, help="directory for PNGs + report.md")
    v.add_argument("--seconds", type=float, default=None, help="evaluate only the start")
    v.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("reproduce", help="the paper's Tables 1-3 on our data (a report)")
    r.add_argument("--data", type=Path, default=Path("cache/datasets/paper"))
    r.add_argument("--out", type=Path, default=Path("cache/reproduce"))
    r.add_argument("--epochs", type=int, default=20)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--quick", action="store_true", help="fewer models (a smoke run)")
    r.set_defaults(func=cmd_reproduce)

    t = sub.add_parser("runs", help="compare saved runs (Markdown table, paper units)")
    t.add_argument("runs", nargs="+", type=Path, help="run directories")
    t.set_defaults(func=cmd_runs)

    b = sub.add_parser("baselines", help="mean spectrum and PCA beside bundles, on the test "
                       "split and on audio (JSON + Markdown)")
    b.add_argument("--data", type=Path, default=Path("cache/datasets/low_latency"),
                   help="dataset: baselines are fitted on its training split")
    b.add_argument("--audio", nargs="*", default=[], metavar="FILE",
                   help="audio files to resynthesise (never seen in training, ideally)")
    b.add_argument("--units", nargs="+", type=int, default=[8], metavar="N",
                   help="PCA sizes (default 8)")
    b.add_argument("--amplitudes", nargs="+", choices=AMPLITUDES, default=list(AMPLITUDES),
                   help="magnitude maps PCA is fitted on (default: all)")
    b.add_argument("--bundle", nargs="*", default=[], metavar="PATH",
                   help="model bundles scored on the same frames and audio")
    b.add_argument("--fit-frames", type=int, default=None, help="first N training frames")
    b.add_argument("--test-frames", type=int, default=None, help="first N test frames")
    b.add_argument("--perceptual", choices=("visqol", "none"), default="visqol")
    b.add_argument("--perceptual-seconds", type=float, default=6.0,
                   help="score the first S s of each clip (ViSQOL: ~2-3 s CPU per s)")
    b.add_argument("--json", type=Path, default=None)
    b.add_argument("--markdown", type=Path, default=None)
    _clip_args(b, 30.0)
    b.set_defaults(func=cmd_baselines)

    y = sub.add_parser("playability", help="per-unit sweeps through the engine: level, "
                       "spectral change, distinct controls, peaks (JSON, PNG, Markdown)")
    y.add_argument("bundle")
    y.add_argument("audio", nargs="*", help="music for resynth mode")
    y.add_argument("--report", type=Path, required=True, help="output directory")
    y.add_argument("--generate-seconds", type=float, default=10.0)
    y.add_argument("--phase", default="rtpghi", help="generate mode's phase (device.sound.phase)")
    _clip_args(y, 10.0)
    y.set_defaults(func=cmd_playability)

    g = sub.add_parser("figures", help="keep a bundle's measured figures (baselines, "
                       "perceptual score, playability) in its manifest")
    g.add_argument("bundle")
    g.add_argument("--baselines", type=Path, required=True,
                   help="baselines --json of the bundle on unseen audio (with PCA of its size "
                        "on pow0.5)")
    g.add_argument("--playability", type=Path, required=True, help="playability.json")
    g.add_argument("--perceptual", type=Path, default=None,
                   help="a baselines --json with the perceptual score")
    g.set_defaults(func=cmd_figures)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(a.verbose, 2)]
    if a.verbose < 2:
        # TensorFlow's C++ INFO/WARNING lines ("Reading SavedModel", oneDNN, XNNPACK: ~50
        # per `new`) bury the progress bars; -vv shows them.  Read once, at TF's import.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(a, "func", None):
        parser.print_help()
        return 2
    from device.errors import AesynthError

    try:
        return int(a.func(a) or 0)
    except AesynthError as e:  # bad data, export settings, bundles: a message, not a traceback
        print(f"aesynth-train {a.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
