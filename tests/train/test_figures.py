"""A bundle's measured figures kept in its manifest (train/figures.py; issue 11: "write
the figures in the manifest"): from the real baselines and playability reports."""

from __future__ import annotations

import json
import shutil

import pytest

from device.errors import EvaluationError
from device.models.bundle import read_bundle
from tests.music import track
from tests.train.test_baselines import TINY, small_dataset  # noqa: F401 - a fixture

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def reports(small_dataset, tmp_path_factory):  # noqa: F811 - the fixture imported above
    from train.cli import main

    d = tmp_path_factory.mktemp("fig")
    bundle = d / "tiny"
    shutil.copytree(TINY, bundle)
    castle = str(track("castle"))
    assert main(["baselines", "--data", str(small_dataset), "--units", "8", "--amplitudes",
                 "pow0.5", "--bundle", str(bundle), "--audio", castle, "--start", "10",
                 "--seconds", "3", "--perceptual", "none", "--json", str(d / "b.json")]) == 0
    assert main(["playability", str(bundle), castle, "--start", "10", "--seconds", "2",
                 "--generate-seconds", "2", "--report", str(d / "play")]) == 0
    return bundle, d / "b.json", d / "play" / "playability.json"


def test_the_figures_land_in_the_manifest_and_the_bundle_still_reads(reports, capsys):
    from train.cli import main

    bundle, bj, pj = reports
    before = (bundle / "manifest.json").read_text()
    assert main(["figures", str(bundle), "--baselines", str(bj), "--playability",
                 str(pj)]) == 0
    b = read_bundle(bundle)  # checksums and every other field as they were
    ev = b.manifest["evaluation"]
    res = json.loads(bj.read_text())["methods"]
    mine, pca = res["bundle:tiny"]["audio"]["mean"], res["pca8-pow0.5"]["audio"]["mean"]
    assert ev["unseen"]["sc_db"] == pytest.approx(mine["sc_db"], abs=1e-3)
    assert ev["unseen"]["margin_sc_db"] == pytest.approx(pca["sc_db"] - mine["sc_db"], abs=2e-3)
    assert ev["unseen"]["margin_lsd_db"] == pytest.approx(pca["lsd_db"] - mine["lsd_db"],
                                                          abs=2e-3)
    play = json.loads(pj.read_text())["modes"]
    for mode, m in ev["playability"]["modes"].items():
        assert m["audible"] == sum(u["audible"] for u in play[mode]["units"])
        assert len(m["band_lsd_db"]) == 8
    assert "louder_when_raised" in ev["playability"]["modes"]["generate"]
    assert json.loads(capsys.readouterr().out) == ev
    # the rest of the manifest is untouched, in its order
    old, new = json.loads(before), json.loads((bundle / "manifest.json").read_text())
    assert list(new)[:len(old)] == list(old) and {k: new[k] for k in old} == old


def test_a_report_of_another_bundle_is_refused_in_one_line(reports, tmp_path, capsys):
    from train.cli import main

    bundle, bj, pj = reports
    other = json.loads(bj.read_text())
    other["methods"] = {k: v for k, v in other["methods"].items() if not k.startswith("bundle")}
    (tmp_path / "other.json").write_text(json.dumps(other))
    before = (bundle / "manifest.json").read_bytes()
    assert main(["figures", str(bundle), "--baselines", str(tmp_path / "other.json"),
                 "--playability", str(pj)]) != 0
    err = capsys.readouterr().err.strip()
    assert "'bundle:tiny'" in err and len(err.splitlines()) == 1
    assert main(["figures", str(bundle), "--baselines", str(tmp_path / "missing.json"),
                 "--playability", str(pj)]) != 0
    assert "does not exist" in capsys.readouterr().err
    assert (bundle / "manifest.json").read_bytes() == before


def test_summarise_names_a_missing_pca_of_the_bundles_size():
    from train.figures import summarise

    with pytest.raises(EvaluationError, match="pca16-pow0.5.*--units 16"):
        summarise("x", 16, {"methods": {"bundle:x": {}}}, {"units": 16, "modes": {}})
