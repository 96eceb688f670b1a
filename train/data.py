"""Training data: magnitude frames from real recordings, split by track.

Audio is decoded, mixed to mono and resampled to the frame's rate by
:func:`device.sound.audiofile.load_audio` and analysed with
:func:`device.sound.features.magnitudes`: the same code the box runs.
Frames are drawn at random (as in the paper) but every track feeds exactly one
split, so a test score is always on music the model never saw.

A dataset on disk is a directory of plain ``.npy`` arrays (read with
``allow_pickle=False``) and a ``manifest.json`` naming every track, its split
and how many frames it gave.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.state.atomic import fsync_tree, recover_swap, swap_dir
from device.sound.audiofile import load_audio  # the box's own decoder (re-exported)
from device.errors import DataError  # re-exported: train.data.DataError
from device.sound.features import FrameConfig, frame_count, magnitudes

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# Paper: 70,000 frames, 10,000 held out for validation and 10,000 for test.
PAPER_COUNTS = {"train": 50_000, "valid": 10_000, "test": 10_000}
MIN_TRACK_SECONDS = 20.0  # shorter files in these packages are sound effects
SILENCE_PEAK = 1e-5  # frames whose loudest bin is below this are digital silence
CHUNK_SECONDS = 10.0  # analysis chunk: bounds memory on long tracks
SOUNDFONTS = ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/FluidR3_GM.sf2")


@dataclass(frozen=True)
class Source:
    """A Debian package of music: where its files are and how to read them."""

    name: str
    package: str
    directory: str
    pattern: str
    kind: str = "audio"  # "audio" (decoded by soundfile) or "midi" (rendered by fluidsynth)
    licence: str = ""
    # Files shorter than this are sound effects in the soundtrack packages, but
    # the one-hit samples of the sample packages are what those are for.
    min_seconds: float = MIN_TRACK_SECONDS
    # Only the start of longer files: planetblupi's 10-29 minute loops would
    # otherwise outweigh every other source together.
    max_seconds: float | None = None
    genre: str = ""


SOURCES = {
    s.name: s
    for s in (
        Source("pushover", "pushover-data", "/usr/share/pushover/themes", "*.ogg",
               licence="GPL-3+", genre="game themes"),
        Source("drascula", "drascula-music", "/usr/share/scummvm/drascula/audio", "*.ogg",
               licence="BSD-like", genre="adventure score"),
        Source("frozen-bubble", "frozen-bubble-data", "/usr/share/games/frozen-bubble/snd",
               "*zik*.ogg", licence="GPL-2", genre="game pop"),
        Source("openttd", "openttd-openmsx", "/usr/share/games/openttd/baseset/openmsx",
               "*.mid", kind="midi", licence="GPL-2", genre="General MIDI"),
        Source("wesnoth", "wesnoth-1.16-music", "/usr/share/games/wesnoth/1.16/data/core/music",
               "*.ogg", licence="GPL-2+", genre="orchestral, folk"),
        Source("planetblupi", "planetblupi-music-ogg", "/usr/share/planetblupi/music", "*.ogg",
               licence="GPL-3+", max_seconds=240.0, genre="electronic game music"),
        Source("asc", "asc-music", "/usr/share/games/asc/music", "*.mp3",
               licence="GPL-2+", genre="rock, synth"),
        Source("sonic-pi", "sonic-pi-samples", "/usr/share/sonic-pi/samples", "*.flac",
               licence="CC0/CC-BY (see copyright)", min_seconds=0.25,
               genre="recorded samples: drums, loops, tabla, guitar, ambient"),
        Source("hydrogen", "hydrogen-drumkits", "/usr/share/hydrogen/data/drumkits",
               "**/*.[wf][al][va]*", licence="GPL-2+/CC (see copyright)", min_seconds=0.1,
               genre="recorded drum hits"),
    )
}
# Sources the shipped models train on.  Every other source in SOURCES is a
# candidate unseen set; docs/training.md keeps hyperrogue-music and
# nexuiz-music (neither listed here) out of all training and reports on them.
DEFAULT_SOURCES = ("pushover", "drascula", "frozen-bubble", "openttd", "wesnoth",
                   "planetblupi", "asc", "sonic-pi", "hydrogen")


@dataclass(frozen=True)
class Track:
    """One recording: ``id`` is ``source/file name`` (stable across machines)."""

    id: str
    path: str
    source: str
    kind: str




# -- finding and installing the music -------------------------------------------
def ensure_packages(sources: Iterable[Source], *, install: bool) -> None:
    """Install the Debian packages of ``sources`` that are missing (when allowed)."""
    missing = [s for s in sources if not any(Path(s.directory).glob(s.pattern))]
    if not missing:
        return
    names = sorted({s.package for s in missing})
    if not install:
        raise DataError(f"music packages not installed: {', '.join(names)}; run "
                        f"'apt-get install {' '.join(names)}' or pass --install")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    log.info("installing %s", " ".join(names))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *names],
                   check=True, env=env)


def track_id(source: Source, path: str | os.PathLike) -> str:
    """``source/relative path``: unique even where a source's folders reuse file names
    (hydrogen's drum kits all have a ``kick.wav``); a flat source's ids stay
    ``source/file name``."""
    return f"{source.name}/{Path(path).relative_to(source.directory).as_posix()}"


def find_tracks(sources: Iterable[Source]) -> list[Track]:
    """Every track of ``sources``, sorted by id (symbolic links resolved, deduplicated)."""
    seen: set[str] = set()
    tracks = []
    for s in sources:
        for p in sorted(Path(s.directory).glob(s.pattern)):
            if not p.is_file():
                continue
            real = os.path.realpath(p)
            if real in seen:
                continue
            seen.add(real)
            tracks.append(Track(track_id(s, p), real, s.name, s.kind))
    return sorted(tracks, key=lambda t: t.id)


def render_midi(path: str, sample_rate: int, cache_dir: Path) -> Path:
    """Render a MIDI file to a cached WAV with fluidsynth (gain 0.2 avoids clipping)."""
    font = next((f for f in SOUNDFONTS if os.path.exists(f)), None)
    if font is None:
        raise DataError(f"no General MIDI soundfont found (tried {', '.join(SOUNDFONTS)}); "
                        f"install timgm6mb-soundfont")
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / f"{Path(path).stem}.{sample_rate}.wav"
    if not out.exists():
        tmp = out.with_suffix(".tmp.wav")
        subprocess.run(["fluidsynth", "-ni", "-q", "-F", str(tmp), "-r", str(sample_rate),
                        "-g", "0.2", font, path], check=True, stdout=subprocess.DEVNULL)
        os.replace(tmp, out)
    return out


def track_length(track: Track, sample_rate: int, cache_dir: Path) -> int:
    """Samples :func:`track_audio` will return, from the file header alone."""
    import soundfile as sf

    path = track.path
    if track.kind == "midi":
        path = render_midi(track.path, sample_rate, cache_dir / "midi")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as e:
        raise DataError(f"cannot read {str(path)!r}: {e}") from None
    if info.samplerate == sample_rate:
        return int(info.frames)
    g = math.gcd(info.samplerate, sample_rate)
    # resample_poly returns ceil(n * up / down) samples
    return -(-int(info.frames) * (sample_rate // g) // (info.samplerate // g))


def track_audio(track: Track, sample_rate: int, cache_dir: Path) -> np.ndarray:
    path = track.path
    if track.kind == "midi":
        path = render_midi(track.path, sample_rate, cache_dir / "midi")
    return load_audio(path, sample_rate)


# -- frames -----------------------------------------------------------------------
def full_frames(n_samples: int, config: FrameConfig) -> range:
    """Indices of the frames that lie wholly inside a signal of ``n_samples``.

    Frame ``g`` ends at sample ``(g + 1) * hop_length`` (device.sound.features).
    """
    K, R = config.win_length, config.hop_length
    return range(-(-K // R) - 1, n_samples // R)


def frames_at(x: np.ndarray, indices: np.ndarray, config: FrameConfig) -> np.ndarray:
    """Magnitudes of frames ``indices`` (sorted) of signal ``x``, float32 (n, bins).

    The signal is analysed in chunks with :func:`device.sound.features.magnitudes`
    so memory stays bounded on long tracks; each chunk carries the
    ``win_length - hop_length`` samples before it so its frames are exact.
    """
    K, R = config.win_length, config.hop_length
    lead = -(-(K - R) // R) * R  # lead-in, whole hops
    out = np.empty((len(indices), config.n_bins), dtype=np.float32)
    per_chunk = max(1, int(CHUNK_SECONDS * config.sample_rate) // R)
    done = 0
    while done < len(indices):
        first = int(indices[done])
        # With the lead-in prepended, chunk frame t ends at global sample
        # first*R - lead + (t+1)*R, i.e. it is global frame first + t - lead/R.
        a = first * R
        mags = magnitudes(x[a - lead: a + per_chunk * R], config=config)
        base = lead // R
        stop = done
        while stop < len(indices) and indices[stop] < first + per_chunk:
            stop += 1
        out[done:stop] = mags[base + (indices[done:stop] - first)]
        done = stop
    return out


def split_tracks(tracks: Sequence[Track], durations: dict[str, float], *, seed: int,
                 fractions: dict[str, float]) -> dict[str, list[Track]]:
    """Assign whole tracks to splits so each gets about its fraction of the audio.

    Tracks are shuffled with ``seed``; test and validation take tracks until
    they hold their share of the total duration, training keeps the rest.
    """
    rng = np.random.default_rng(seed)
    order = [tracks[i] for i in rng.permutation(len(tracks))]
    total = sum(durations[t.id] for t in tracks)
    splits: dict[str, list[Track]] = {s: [] for s in SPLITS}
    filled = {s: 0.0 for s in SPLITS}
    for t in order:
        for s in ("test", "valid"):
            if filled[s] < fractions[s] * total:
                splits[s].append(t)
                filled[s] += durations[t.id]
                break
        else:
            splits["train"].append(t)
            filled["train"] += durations[t.id]
    for s in SPLITS:
        if not splits[s]:
            raise DataError(f"split {s!r} got no tracks: need at least 3 tracks, got "
                            f"{len(tracks)}")
    return splits


# -- the dataset --------------------------------------------------------------------
@dataclass
class Dataset:
    """Linear magnitude frames (float32, frames x bins) per split, with provenance."""

    frame: FrameConfig
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    manifest: dict

    def split(self, name: str) -> np.ndarray:
        return getattr(self, name)

    def tracks(self, split: str) -> list[str]:
        return [t["id"] for t in self.manifest["tracks"] if t["split"] == split]


def build_dataset(out_dir: str | os.PathLike, *, frame: FrameConfig,
                  sources: Sequence[str] = DEFAULT_SOURCES,
                  counts: dict[str, int] | None = None, seed: int = 0,
                  install: bool = False, max_tracks: int | None = None,
                  max_seconds: float | None = None,
                  progress: Callable[[int, int, str], None] | None = None) -> Dataset:
    """Decode, analyse and sample frames from ``sources``; write and return the dataset.

    ``counts`` frames per split (default: the paper's 50k/10k/10k) are drawn
    uniformly over the frames of each split's tracks.  ``max_tracks`` and
    ``max_seconds`` (per track) make small datasets for tests.
    """
    counts = dict(PAPER_COUNTS if counts is None else counts)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise DataError(f"unknown source(s) {unknown}; choose from {', '.join(SOURCES)}")
    srcs = [SOURCES[s] for s in sources]
    ensure_packages(srcs, install=install)
    out_dir = Path(out_dir)
    cache = out_dir.parent / "render-cache"
    tracks = find_tracks(srcs)
    if max_tracks is not None:
        tracks = tracks[:max_tracks]
    # Pass 1 reads only headers (MIDI is rendered once, cached), so memory
    # holds one decoded track at a time, not the corpus.
    lengths: dict[str, int] = {}
    kept = []
    for i, t in enumerate(tracks):
        if progress:
            progress(i, len(tracks), f"scan {t.id}")
        src = SOURCES[t.source]
        caps = [c for c in (max_seconds, src.max_seconds) if c is not None]
        limit = int(min(caps) * frame.sample_rate) if caps else None
        shortest = min(src.min_seconds, max_seconds or src.min_seconds) * frame.sample_rate
        # a frame needs win_length samples: shorter files give none
        shortest = max(shortest, frame.win_length + frame.hop_length)
        n = track_length(t, frame.sample_rate, cache)
        n = n if limit is None else min(n, limit)
        if n >= shortest:
            lengths[t.id] = n
            kept.append(t)
    if progress:
        progress(len(tracks), len(tracks), "scanned")
    durations = {t.id: lengths[t.id] / frame.sample_rate for t in kept}
    total = sum(counts.values())
    fractions = {s: counts[s] / total for s in SPLITS}
    splits = split_tracks(kept, durations, seed=seed, fractions=fractions)
    rng = np.random.default_rng(seed + 1)
    arrays: dict[str, np.ndarray] = {}
    records = []
    for s in SPLITS:
        ts = splits[s]
        n_frames = [len(full_frames(lengths[t.id], frame)) for t in ts]
        # draw frame slots uniformly over all frames of the split's tracks
        picks = np.sort(rng.choice(sum(n_frames), size=min(counts[s], sum(n_frames)),
                                   replace=False))
        edges = np.cumsum([0] + n_frames)
        parts = []
        for j, t in enumerate(ts):
            mine = picks[(picks >= edges[j]) & (picks < edges[j + 1])] - edges[j]
            idx = mine + full_frames(lengths[t.id], frame).start
            if progress:
                progress(j, len(ts), f"{s}: analyse {t.id}")
            x = track_audio(t, frame.sample_rate, cache)[: lengths[t.id]]
            if len(x) < lengths[t.id]:  # header promised more than decoded
                idx = idx[idx < full_frames(len(x), frame).stop]
            mags = frames_at(x.astype(np.float32), idx, frame) if len(idx) else np.empty(
                (0, frame.n_bins), np.float32)
            loud = mags.max(axis=1) >= SILENCE_PEAK
            parts.append(mags[loud])
            records.append({"id": t.id, "split": s, "path": t.path,
                            "package": SOURCES[t.source].package,
                            "licence": SOURCES[t.source].licence,
                            "seconds": round(durations[t.id], 2),
                            "frames": int(loud.sum())})
        arrays[s] = np.concatenate(parts) if parts else np.empty((0, frame.n_bins), np.float32)
        if progress:
            progress(SPLITS.index(s) + 1, len(SPLITS), f"sampled {s}: {len(arrays[s])} frames")
    # the paper draws frames at random: shuffle so batches mix tracks
    for s in SPLITS:
        arrays[s] = arrays[s][rng.permutation(len(arrays[s]))]
    manifest = {"format": "aesynth-dataset-1", "frame": frame.to_dict(), "seed": seed,
                "sources": list(sources), "counts": {s: int(len(arrays[s])) for s in SPLITS},
                "requested": counts, "silence_peak": SILENCE_PEAK,
                "tracks": records}
    write_dataset(out_dir, arrays, manifest)
    return Dataset(frame, arrays["train"], arrays["valid"], arrays["test"], manifest)


def write_dataset(out_dir: Path, arrays: dict[str, np.ndarray], manifest: dict) -> None:
    """Write the dataset beside ``out_dir``, fsync it, then swap it in; a kill at any
    point leaves the old dataset or the new one (see device.state.atomic.swap_dir)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover_swap(out_dir)  # a previous write killed between its renames
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for s in SPLITS:
            np.save(tmp / f"{s}.npy", arrays[s].astype(np.float32), allow_pickle=False)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        fsync_tree(tmp)
        swap_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read a dataset written by :func:`build_dataset` (no pickles)."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        arrays = {s: np.load(path / f"{s}.npy", allow_pickle=False) for s in SPLITS}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read dataset {str(path)!r}: {e}") from None
    frame = FrameConfig.from_dict(manifest["frame"])
    for s, a in arrays.items():
        if a.ndim != 2 or a.shape[1] != frame.n_bins:
            raise DataError(f"dataset {str(path)!r} split {s!r} must be (frames, "
                            f"{frame.n_bins}), got {a.shape}")
    return Dataset(frame, arrays["train"], arrays["valid"], arrays["test"], manifest)


__all__ = ["Dataset", "DataError", "SOURCES", "DEFAULT_SOURCES", "build_dataset",
           "load_dataset", "load_audio", "frames_at", "full_frames", "find_tracks",
           "split_tracks", "frame_count"]
