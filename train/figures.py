"""The done-when figures of a bundle, kept in its manifest (``manifest["evaluation"]``).

Issue 11 asks for the figures in the manifest as well as in docs/training.md:
a bundle copied onto a USB stick carries what it was measured to do.  This
reads the JSON that ``aesynth-train baselines`` and ``aesynth-train
playability`` write for a bundle and keeps a summary:

* ``unseen``: the clips (path, start, seconds), the bundle's spectral
  convergence and log-spectral distance (dB) on them beside PCA of the same
  size on |X|^0.5 fitted on the same training frames, and the margins (dB,
  positive = the bundle is better);
* ``perceptual`` (optional, a second baselines JSON with the score): ViSQOL
  MOS-LQO of the bundle and of that PCA;
* ``playability``: per mode the audible units, the participation ratio, the
  worst peak at a control extreme (before the output limiter), and every
  unit's band LSD (dB) from gain 0 to 1; generate mode's "louder when raised".

The manifest is rewritten atomically; the models' checksums are untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from device.errors import EvaluationError

PCA_AMPLITUDE = "pow0.5"  # the done-when's reference: PCA on |X|^0.5 of the same size


def _method(res: dict[str, Any], key: str, what: str, hint: str) -> dict[str, Any]:
    """``res["methods"][key]``, or an EvaluationError naming what lacks it and ``hint``."""
    try:
        return res["methods"][key]
    except KeyError:
        raise EvaluationError(f"{what} has no results for {key!r}: {hint}") from None


def _bundle_entry(res: dict[str, Any], name: str, what: str) -> dict[str, Any]:
    have = ", ".join(sorted(res.get("methods", {}))) or "none"
    return _method(res, f"bundle:{name}", what, f"it has {have}")


def _pca_entry(res: dict[str, Any], units: int, what: str) -> dict[str, Any]:
    return _method(res, f"pca{units}-{PCA_AMPLITUDE}", what,
                   f"run baselines with --units {units} --amplitudes {PCA_AMPLITUDE}")


def _audio_mean(entry: dict[str, Any], key: str, what: str) -> float:
    try:
        return float(entry["audio"]["mean"][key])
    except KeyError:
        raise EvaluationError(f"{what} has no audio {key!r}: run baselines with --audio "
                              f"(and a perceptual score for 'perceptual')") from None


def summarise(name: str, units: int, baselines: dict[str, Any], playability: dict[str, Any],
              perceptual: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``evaluation`` record of bundle ``name`` (``units`` units) from the documents
    of train/baselines.py and train/playability.py.  Raises EvaluationError naming
    what a document lacks."""
    mine = _bundle_entry(baselines, name, "the baselines JSON")
    pca = _pca_entry(baselines, units, "the baselines JSON")
    sc, lsd = _audio_mean(mine, "sc_db", "the bundle"), _audio_mean(mine, "lsd_db", "the bundle")
    pca_sc, pca_lsd = _audio_mean(pca, "sc_db", "PCA"), _audio_mean(pca, "lsd_db", "PCA")
    out: dict[str, Any] = {
        "unseen": {"clips": baselines.get("audio", []),
                   "sc_db": round(sc, 3), "lsd_db": round(lsd, 3),
                   f"pca{units}_{PCA_AMPLITUDE}": {"sc_db": round(pca_sc, 3),
                                                   "lsd_db": round(pca_lsd, 3)},
                   "margin_sc_db": round(pca_sc - sc, 3),
                   "margin_lsd_db": round(pca_lsd - lsd, 3),
                   "fit_frames": baselines.get("fit_frames")}}
    if perceptual is not None:
        p_mine = _bundle_entry(perceptual, name, "the perceptual JSON")
        p_pca = _pca_entry(perceptual, units, "the perceptual JSON")
        out["perceptual"] = {
            "name": perceptual.get("perceptual", {}).get("name"),
            "clips": perceptual.get("audio", []),
            "bundle": round(_audio_mean(p_mine, "perceptual", "the bundle"), 3),
            f"pca{units}_{PCA_AMPLITUDE}": round(_audio_mean(p_pca, "perceptual", "PCA"), 3)}
    if int(playability.get("units", -1)) != units:
        raise EvaluationError(f"the playability JSON is of a {playability.get('units')}-unit "
                              f"bundle, this one has {units}")
    modes = {}
    for mode, m in playability["modes"].items():
        modes[mode] = {
            "audible": sum(bool(u["audible"]) for u in m["units"]),
            "distinct_controls": round(float(m["participation_ratio"]), 2),
            "worst_extreme_peak": round(float(m["worst_peak"]["peak"]), 3),
            "peak_source": m.get("peak_source"),
            # through the engine's output limiter (absent for reports read at the output)
            **({"worst_output_peak": round(float(m["worst_output_peak"]["output_peak"]), 3),
                "worst_gain_reduction_db": round(float(m["worst_gain_reduction_db"]), 2)}
               if m.get("worst_output_peak") else {}),
            "band_lsd_db": [round(float(u["band_lsd_db"]), 2) for u in m["units"]]}
        if mode == "generate":
            modes[mode]["louder_when_raised"] = sum(bool(u["louder_when_raised"])
                                                    for u in m["units"])
    out["playability"] = {"clips": playability.get("audio", []), "modes": modes}
    return out


def record(bundle_dir: str | os.PathLike, evaluation: dict[str, Any]) -> None:
    """Write ``evaluation`` into the bundle's manifest (atomically, fsynced)."""
    import json

    from device.models.bundle import read_bundle
    from device.state.atomic import write_bytes_atomic

    path = Path(bundle_dir) / "manifest.json"
    b = read_bundle(bundle_dir)  # a bundle that does not validate is not written to
    manifest = dict(b.manifest)
    manifest["evaluation"] = evaluation
    # the layout train/bundle_writer.py writes, so a diff shows only the new record
    text = json.dumps(manifest, indent=1, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))
