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

import hashlib
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

from device.errors import AudioFileError, DataError  # DataError re-exported
from device.sound.audiofile import load_audio  # the box's own decoder (re-exported)
from device.sound.features import FrameConfig, frame_count, magnitudes
from device.state.atomic import fsync_tree, recover_swap, swap_dir

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
    # "audio" (decoded by soundfile), "midi" (rendered by fluidsynth) or "zip": the
    # files are the members of the archive ``pattern`` names that match ``members``
    # (ufoai-music ships its tracks inside one .pk3, a zip file).
    kind: str = "audio"
    members: str = ""
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
        Source("ufoai", "ufoai-music", "/usr/share/games/ufoai/base", "0music.pk3",
               kind="zip", members="music/*.ogg", licence="GPL-2+/CC-BY-SA (see copyright)",
               genre="orchestral, ambient, electronic game score"),
        Source("hydrogen", "hydrogen-drumkits", "/usr/share/hydrogen/data/drumkits",
               "**/*.[wf][al][va]*", licence="GPL-2+/CC (see copyright)", min_seconds=0.1,
               genre="recorded drum hits"),
    )
}
# Sources the shipped 8-unit default trains on (models/wide16 adds ufoai: see
# docs/training.md).  Every other source in SOURCES is a
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


ARCHIVE_SEPARATOR = "::"  # a zip member's track path: ``archive::member``


def find_tracks(sources: Iterable[Source]) -> list[Track]:
    """Every track of ``sources``, sorted by id (symbolic links resolved, deduplicated).

    A ``zip`` source's tracks are its archives' members matching ``members``; their
    path is ``archive::member`` and their id ``source/member``.  Raises DataError
    for an archive that is not a readable zip file.
    """
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
            if s.kind == "zip":
                tracks += [Track(f"{s.name}/{m}", f"{real}{ARCHIVE_SEPARATOR}{m}", s.name, s.kind)
                           for m in _archive_members(real, s.members)]
            else:
                tracks.append(Track(track_id(s, p), real, s.name, s.kind))
    return sorted(tracks, key=lambda t: t.id)


def _archive_members(archive: str, pattern: str) -> list[str]:
    import fnmatch
    import zipfile

    try:
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read the archive {archive!r}: {e}") from None
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern) and not n.endswith("/"))


def extract_member(track_path: str, cache_dir: Path) -> Path:
    """The member ``archive::member`` copied once into ``cache_dir`` (atomically: a
    half-written copy is never taken for a track); returns the copy's path.
    Raises DataError for a missing archive or member."""
    import zipfile

    archive, member = track_path.split(ARCHIVE_SEPARATOR, 1)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / f"{Path(archive).stem}-{member.replace('/', '_')}"
    if not out.exists():
        tmp = out.with_name(out.name + ".tmp")
        try:
            with zipfile.ZipFile(archive) as z, z.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot extract {member!r} from {archive!r}: {e}") from None
        os.replace(tmp, out)
    return out


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

    path = _decodable(track, sample_rate, cache_dir)
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
    return load_audio(_decodable(track, sample_rate, cache_dir), sample_rate)


def _decodable(track: Track, sample_rate: int, cache_dir: Path) -> str | Path:
    """A file soundfile can decode: MIDI rendered, a zip member extracted (cached)."""
    if track.kind == "midi":
        return render_midi(track.path, sample_rate, cache_dir / "midi")
    if track.kind == "zip":
        return extract_member(track.path, cache_dir / "zip")
    return track.path


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
           "split_tracks", "frame_count", "find_audio", "probe_audio", "analyse_file",
           "audio_dataset", "AudioFile", "FoundAudio"]


# -- your own audio ---------------------------------------------------------------------
# File name endings searched for in folders (a file named on the command line is
# always tried): libsndfile's formats and their usual names.  Anything else in a
# folder (a README, cover art) is counted as ignored, never decoded.
AUDIO_SUFFIXES = frozenset({
    ".wav", ".wave", ".bwf", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
    ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64", ".voc", ".sd2", ".paf", ".svx",
    ".nist", ".sph", ".ircam", ".sf", ".mpc", ".wve", ".xi", ".htk", ".avr", ".pvf"})
MIN_AUDIO_SECONDS = 5.0  # usable audio, all files together: less makes no model
ANALYSIS_VERSION = 1  # bump when the cached analysis changes meaning
CACHE_STRIDE_HOPS = 8  # cached frames every 8 hops (1024 samples at hop 128: 2x overlap)
SPLIT_FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}


@dataclass(frozen=True)
class AudioFile:
    """One of the user's recordings, as read from its header.

    ``name`` is the path relative to the AUDIO argument it was found under
    (the file name for a file given directly): what manifests record.
    """

    path: str
    name: str
    sha256: str
    seconds: float
    sample_rate: int
    channels: int

    def record(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 3), "sha256": self.sha256,
                "sample_rate": self.sample_rate, "channels": self.channels}


@dataclass
class FoundAudio:
    """What :func:`probe_audio` made of the AUDIO arguments."""

    files: list[AudioFile]
    skipped: list[tuple[str, str]]  # (path, why): unreadable or not audio
    ignored: int  # files in folders whose names are not audio names
    searched: list[str]

    @property
    def seconds(self) -> float:
        return float(sum(f.seconds for f in self.files))


def find_audio(paths: Sequence[str | os.PathLike]) -> tuple[list[tuple[Path, str]], int]:
    """Files to try: ``[(path, name)]`` and how many folder files were ignored by name.

    A file argument is always tried; a folder is searched recursively for
    :data:`AUDIO_SUFFIXES` (sorted, symbolic links resolved, each file once).
    Raises :class:`DataError` for a path that does not exist.
    """
    out: list[tuple[Path, str]] = []
    seen: set[str] = set()
    ignored = 0
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file())
            for q in found:
                if q.suffix.lower() not in AUDIO_SUFFIXES:
                    ignored += 1
                    continue
                if os.path.realpath(q) not in seen:
                    seen.add(os.path.realpath(q))
                    out.append((q, q.relative_to(p).as_posix()))
        elif p.exists():
            if os.path.realpath(p) not in seen:
                seen.add(os.path.realpath(p))
                out.append((p, p.name))
        else:
            raise DataError(f"audio path {os.fspath(arg)!r} does not exist")
    return out, ignored


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def probe_audio(paths: Sequence[str | os.PathLike], *,
                progress: Callable[[int, int, str], None] | None = None) -> FoundAudio:
    """Headers and checksums of the audio under ``paths``; unreadable files are skipped.

    Raises :class:`DataError` naming the paths searched when no file is audio.
    """
    import soundfile as sf

    candidates, ignored = find_audio(paths)
    files, skipped = [], []
    names: set[str] = set()
    for i, (p, name) in enumerate(candidates):
        if progress:
            progress(i, len(candidates), f"read {name}")
        try:
            info = sf.info(str(p))
            if info.frames <= 0 or info.samplerate <= 0:
                raise DataError("holds no samples")
        except (RuntimeError, sf.LibsndfileError, DataError, OSError) as e:
            skipped.append((os.fspath(p), str(e).splitlines()[0] if str(e) else type(e).__name__))
            continue
        while name in names:  # two folders holding the same relative name
            name = "_" + name
        names.add(name)
        files.append(AudioFile(os.path.realpath(p), name, file_sha256(p),
                               info.frames / info.samplerate, int(info.samplerate),
                               int(info.channels)))
    if progress:
        progress(len(candidates), len(candidates), "read")
    searched = [os.fspath(p) for p in paths]
    if not files:
        what = (f"{len(skipped)} unreadable: " + ", ".join(repr(p) for p, _ in skipped[:3])
                if skipped else "none with an audio name")
        raise DataError(f"no audio found in {', '.join(repr(s) for s in searched)} "
                        f"(searched recursively: {len(candidates)} candidate file(s), {what}; "
                        f"{ignored} other file(s) ignored)")
    return FoundAudio(files, skipped, ignored, searched)


def analysis_key(sha256: str, frame: FrameConfig) -> str:
    """Cache key of one file's analysis: its checksum, the frame and the cache layout."""
    doc = json.dumps({"sha256": sha256, "frame": frame.to_dict(), "stride": CACHE_STRIDE_HOPS,
                      "version": ANALYSIS_VERSION}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def analyse_file(f: AudioFile, frame: FrameConfig, cache_dir: str | os.PathLike
                 ) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(magnitudes (n, bins) float32, frame indices (n,), samples, from cache) of ``f``.

    Every :data:`CACHE_STRIDE_HOPS`-th full frame (:func:`full_frames`) through
    :func:`frames_at`, cached in ``cache_dir`` under :func:`analysis_key`, so a
    second run on the same file decodes nothing.  Cache files are plain
    ``.npy`` arrays (no pickles), written atomically.
    """
    key = analysis_key(f.sha256, frame)
    d = Path(cache_dir) / key[:2] / key
    try:
        mags = np.load(d / "mags.npy", allow_pickle=False)
        index = np.load(d / "index.npy", allow_pickle=False)
        n = int(json.loads((d / "meta.json").read_text())["samples"])
        if mags.ndim == 2 and mags.shape == (len(index), frame.n_bins):
            return mags, index, n, True
    except (OSError, ValueError, KeyError):
        pass  # not cached (or damaged): analyse again
    try:
        x = load_audio(f.path, frame.sample_rate)
    except AudioFileError as e:  # names the file
        raise DataError(str(e)) from None
    r = full_frames(len(x), frame)
    index = np.arange(r.start, r.stop, CACHE_STRIDE_HOPS, dtype=np.int64)
    mags = (frames_at(x, index, frame) if len(index)
            else np.empty((0, frame.n_bins), np.float32))
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = d.with_name(d.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        np.save(tmp / "mags.npy", mags, allow_pickle=False)
        np.save(tmp / "index.npy", index, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps({"samples": len(x), "name": f.name,
                                                   "sha256": f.sha256}) + "\n")
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)
    except OSError as e:  # a full cache disk costs a re-analysis next time, nothing else
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("cannot cache the analysis of %s in %s: %s", f.name, d, e)
    return mags, index, len(x), False


def time_splits(index: np.ndarray, n_samples: int, frame: FrameConfig,
                fractions: dict[str, float] = SPLIT_FRACTIONS) -> dict[str, np.ndarray]:
    """Boolean masks over frames ``index`` of one file split by time: the first
    ``fractions['train']`` of the samples train, then valid, then test.  A frame
    whose window straddles a boundary is in no split, so no sample feeds two."""
    end = (index + 1) * frame.hop_length  # frame g covers [end - win_length, end)
    start = end - frame.win_length
    cuts = np.cumsum([0.0] + [fractions[s] for s in SPLITS]) * n_samples
    return {s: (start >= cuts[i]) & (end <= cuts[i + 1]) for i, s in enumerate(SPLITS)}


def split_by_file(files: Sequence[AudioFile], *, seed: int) -> dict[str, str] | None:
    """File name -> split when the audio can be split by file (at least 3 files, none
    holding half the audio, every split non-empty, at least half the audio in training),
    else None (split by time)."""
    total = sum(f.seconds for f in files)
    if len(files) < 3 or max(f.seconds for f in files) >= 0.5 * total:
        return None
    tracks = [Track(f.name, f.path, "audio", "audio") for f in files]
    try:
        splits = split_tracks(tracks, {f.name: f.seconds for f in files}, seed=seed,
                              fractions=SPLIT_FRACTIONS)
    except DataError:
        return None
    if sum(f.seconds for f in files if f.name in {t.id for t in splits["train"]}) < 0.5 * total:
        return None
    return {t.id: s for s in SPLITS for t in splits[s]}


def audio_dataset(found: FoundAudio, *, frame: FrameConfig, cache_dir: str | os.PathLike,
                  max_train: int | None = None, seed: int = 0,
                  min_seconds: float = MIN_AUDIO_SECONDS,
                  progress: Callable[[int, int, str], None] | None = None
                  ) -> tuple[Dataset, dict]:
    """A :class:`Dataset` of the user's audio, and what happened (JSON-able).

    Each file is analysed once (:func:`analyse_file`, cached by checksum and
    frame); silent frames are dropped; files are split by file
    (:func:`split_by_file`) or, for one or two files or one that dominates, by
    time within each file (:func:`time_splits`).  ``max_train`` training frames
    at most, drawn at random.  Raises :class:`DataError` when the files hold
    less than ``min_seconds`` of audio or a split gets no frames.
    """
    rate = frame.sample_rate
    if found.seconds < min_seconds:
        raise DataError(f"too little audio: need at least {min_seconds:g} s, found "
                        f"{found.seconds:.2f} s in {len(found.files)} file(s)")
    by_file = split_by_file(found.files, seed=seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    records, clips = [], {s: [] for s in SPLITS}
    stats = {"analysed": 0, "cached": 0, "unreadable": []}
    for i, f in enumerate(found.files):
        if progress:
            progress(i, len(found.files), f"analyse {f.name}")
        try:
            mags, index, n, cached = analyse_file(f, frame, cache_dir)
        except DataError as e:  # header fine, data not: skip it and say so
            stats["unreadable"].append((f.path, str(e)))
            continue
        stats["cached" if cached else "analysed"] += 1
        loud = mags.max(axis=1) >= SILENCE_PEAK if len(mags) else np.zeros(0, bool)
        masks = ({by_file[f.name]: np.ones(len(index), bool)} if by_file
                 else time_splits(index, n, frame))
        for s, m in masks.items():
            keep = m & loud
            parts[s].append(mags[keep])
            if by_file:
                start, seconds = 0.0, n / rate
            else:
                cuts = np.cumsum([0.0] + [SPLIT_FRACTIONS[k] for k in SPLITS]) * n / rate
                j = SPLITS.index(s)
                start, seconds = float(cuts[j]), float(cuts[j + 1] - cuts[j])
            records.append({"id": f.name, "split": s, "path": f.path, "sha256": f.sha256,
                            "start": round(start, 3), "seconds": round(seconds, 3),
                            "frames": int(keep.sum())})
            clips[s].append({"path": f.path, "name": f.name, "start": start,
                             "seconds": seconds})
    if progress:
        progress(len(found.files), len(found.files), "analysed")
    arrays = {s: (np.concatenate(parts[s]) if parts[s]
                  else np.empty((0, frame.n_bins), np.float32)) for s in SPLITS}
    empty = [s for s in SPLITS if len(arrays[s]) == 0]
    if empty:
        raise DataError(f"too little audio: the {'/'.join(empty)} split got no frames "
                        f"(every frame silent or too short); need at least {min_seconds:g} s "
                        f"of sound, found {found.seconds:.2f} s in {len(found.files)} file(s)")
    rng = np.random.default_rng(seed + 1)
    available = len(arrays["train"])
    if max_train is not None and available > max_train:
        arrays["train"] = arrays["train"][np.sort(rng.choice(available, max_train,
                                                             replace=False))]
    for s in SPLITS:  # the paper draws frames at random: shuffle so batches mix files
        arrays[s] = arrays[s][rng.permutation(len(arrays[s]))]
    manifest = {"format": "aesynth-dataset-1", "frame": frame.to_dict(), "seed": seed,
                "sources": ["audio"], "split": "file" if by_file else "time",
                "counts": {s: int(len(arrays[s])) for s in SPLITS},
                "available_train_frames": int(available), "silence_peak": SILENCE_PEAK,
                "cache_stride_hops": CACHE_STRIDE_HOPS, "tracks": records}
    info = {"split": manifest["split"], "clips": clips, **stats}
    return Dataset(frame, arrays["train"], arrays["valid"], arrays["test"], manifest), info


def write_audio_dataset(out_dir: str | os.PathLike, ds: Dataset) -> None:
    """Write an :func:`audio_dataset` like :func:`build_dataset` writes its own."""
    write_dataset(Path(out_dir), {s: ds.split(s) for s in SPLITS}, ds.manifest)
