"""A tiny end-to-end run on real music: dataset -> fit -> export -> evaluate -> check."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.models.bundle import read_bundle
from device.models.check import run_check
from device.sound.features import LOW_LATENCY
from device.models.runtime import Model

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, pushover_tracks) -> dict[str, Path]:
    """One short run through the CLI, shared by the tests below."""
    from train.cli import main

    root = tmp_path_factory.mktemp("e2e")
    data, run, bundle = root / "ds", root / "run", root / "bundle"
    assert main(["dataset", "--out", str(data), "--sources", "pushover", "--max-tracks", "3",
                 "--max-seconds", "5", "--train", "400", "--valid", "100", "--test", "100",
                 "--seed", "2"]) == 0
    assert main(["fit", "--data", str(data), "--recipe", "best", "--set", "epochs=1",
                 "--set", "patience=0", "--out", str(run)]) == 0
    assert main(["export", str(run), "--data", str(data), "--out", str(bundle),
                 "--name", "e2e", "--quantization", "dynamic"]) == 0
    return {"root": root, "data": data, "run": run, "bundle": bundle}


def test_run_records_recipe_seed_curves_and_metrics(pipeline):
    doc = json.loads((pipeline["run"] / "run.json").read_text())
    assert doc["recipe"]["epochs"] == 1 and doc["seed"] == 0
    assert len(doc["history"]["loss"]) == 1 and len(doc["history"]["val_loss"]) == 1
    assert doc["metrics"]["test"]["mse_paper"] > 0
    assert set(doc["data"]["tracks"]) == {"train", "valid", "test"}


def test_bundle_passes_check_and_records_training(pipeline):
    buf = io.StringIO()
    assert run_check([str(pipeline["bundle"])], out=buf) == 0
    assert ": OK  e2e: 8 units" in buf.getvalue()
    b = read_bundle(pipeline["bundle"])
    assert b.frame == LOW_LATENCY and b.units == 8
    assert b.encoder.quantization == "dynamic"
    tr = b.manifest["training"]
    assert tr["data"]["tracks"]["train"] and tr["recipe"]["name"] == "best"
    stats = b.unit_stats
    assert stats is not None and np.all(stats.min <= stats.mean) and np.all(stats.mean <= stats.max)
    # sigmoid units: the statistics are activations, inside (0, 1)
    assert np.all(stats.min >= 0) and np.all(stats.max <= 1)


def test_bundle_runs_in_device_runtime(pipeline):
    b = read_bundle(pipeline["bundle"])
    with Model(b.encoder.content) as enc, Model(b.decoder.content) as dec:
        x = np.full((1, b.n_bins), 0.5, np.float32)
        u = enc.run(x).copy()
        y = dec.run(u)
    assert u.shape == (1, 8) and y.shape == (1, b.n_bins) and np.all(np.isfinite(y))


def test_export_parity_against_keras(pipeline):
    tr = read_bundle(pipeline["bundle"]).manifest["training"]
    par = tr["export"]["parity"]
    assert par["encoder"]["snr_db"] > 30
    assert par["decoder"]["snr_db"] > 15
    assert abs(tr["export"]["quantization_sc_loss_db"]) < 3


def test_float_exports_match_keras_closely(pipeline):
    from train.data import load_dataset
    from train.export import export_pair, parity, run_tflite
    from train.fit import load_run

    run = load_run(pipeline["run"])
    ds = load_dataset(pipeline["data"])
    enc, dec = export_pair(run, "float32", ds.train)
    u_keras = run.encode(ds.test[:50])
    p = parity(u_keras, run_tflite(enc, run.features(ds.test[:50])))
    assert p["max_abs_error"] < 1e-4
    y_keras = run.decoder.predict(u_keras, verbose=0)
    assert parity(y_keras, run_tflite(dec, u_keras))["snr_db"] > 80


def test_op_versions_load_in_tflite_runtime_214(pipeline):
    from train.export import TFLITE_RUNTIME_214_MAX, op_versions

    b = read_bundle(pipeline["bundle"])
    for mf in (b.encoder, b.decoder):
        for op, version in op_versions(mf.content).items():
            assert op in TFLITE_RUNTIME_214_MAX, f"{mf.role}: op {op} not known to load there"
            assert version <= TFLITE_RUNTIME_214_MAX[op], f"{mf.role}: {op} v{version}"


def test_per_channel_dynamic_would_not_load_there(pipeline):
    """The check above can fail: TF's default dynamic-range export is refused by it."""
    import tensorflow as tf

    from train.export import TFLITE_RUNTIME_214_MAX, export_models, op_versions
    from train.fit import load_run

    _, dec = export_models(load_run(pipeline["run"]))
    conv = tf.lite.TFLiteConverter.from_keras_model(dec)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    v = op_versions(conv.convert())["FULLY_CONNECTED"]
    assert v > TFLITE_RUNTIME_214_MAX["FULLY_CONNECTED"]


def test_evaluate_cli_writes_json_report_and_pictures(pipeline, pushover_tracks):
    from train.cli import main

    out = pipeline["root"] / "eval"
    js = out / "eval.json"
    out.mkdir()
    unseen = pushover_tracks[-1]  # only the first 3 tracks were used
    assert main(["evaluate", str(pipeline["bundle"]), str(unseen), "--seconds", "3",
                 "--json", str(js), "--report", str(out)]) == 0
    res = json.loads(js.read_text())
    m = res["files"][str(unseen)]
    assert m["seen_in_training"] is False
    assert np.isfinite([m["mse_paper"], m["sc_db"], m["lsd_db"], m["snr_db"]]).all()
    assert m["seconds"] == pytest.approx(3.0)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["spectrogram_0_" + unseen.stem + ".png", "training_curves.png"]
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    report = (out / "report.md").read_text()
    assert unseen.name in report and "training_curves.png" in report


def test_cli_without_command_prints_help():
    r = subprocess.run([sys.executable, "-m", "train.cli"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "dataset" in r.stdout and "reproduce" in r.stdout


def test_cli_reports_a_data_error_as_one_line_not_a_traceback(tmp_path, capsys):
    from train.cli import main

    code = main(["dataset", "--out", str(tmp_path / "d"), "--sources", "pushover",
                 "--max-tracks", "2"])
    err = capsys.readouterr().err
    assert code == 1
    assert "aesynth-train dataset: split " in err and "at least 3 tracks" in err
    assert "Traceback" not in err


def test_reproduce_quick_writes_the_three_tables(pipeline):
    from train.cli import main

    out = pipeline["root"] / "repro"
    assert main(["reproduce", "--data", str(pipeline["data"]), "--out", str(out),
                 "--epochs", "1", "--quick"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["hl1"] for r in res["table1"]] == [8, 256]
    assert res["table1"][0]["paper_valid"] == 0.0440
    t3 = res["table3"][0]
    assert (t3["hl1"], t3["hl2"]) == (256, 8) and t3["valid"]["mse_paper"] > 0
    assert res["table2"][0]["adjusted"] == pytest.approx(
        res["table2"][0]["stage2_valid_mse"] * 1025 / 256)
    md = (out / "tables.md").read_text()
    assert "Table 1" in md and "Table 3" in md and "| best |" in md


def test_runs_table_lists_saved_runs(pipeline, capsys):
    from train.cli import main

    assert main(["runs", str(pipeline["run"])]) == 0
    out = capsys.readouterr().out
    assert "| best | standard | [256, 8] | relu/sigmoid | mixed (3e-05) |" in out


def test_baselines_more_components_fit_better(pipeline):
    from train.data import load_dataset
    from train.reproduce import baselines

    ds = load_dataset(pipeline["data"])
    b = baselines(ds, components=(8, 64))
    for split in ("valid", "test"):
        assert b["pca64"][split] < b["pca8"][split] < b["mean"][split]


def test_fit_continues_a_saved_run_and_records_it(pipeline, tmp_path):
    """``fit --start RUN``: the start's weights, normaliser and recipe (changed by --set),
    and the run says what it continued; --recipe beside --start is refused."""
    from train.cli import main

    out = tmp_path / "more"
    assert main(["fit", "--data", str(pipeline["data"]), "--start", str(pipeline["run"]),
                 "--set", "learning_rate=0.0005", "--out", str(out)]) == 0
    first = json.loads((pipeline["run"] / "run.json").read_text())
    doc = json.loads((out / "run.json").read_text())
    assert doc["recipe"]["name"] == "best" and doc["recipe"]["learning_rate"] == 0.0005
    assert doc["normaliser"] == first["normaliser"]
    cont = doc["metrics"]["continued_from"]
    assert cont["run"] == str(pipeline["run"]) and cont["epochs_run"] == 1
    assert cont["recipe"]["learning_rate"] == first["recipe"]["learning_rate"]
    assert "start_val_loss" in doc["metrics"]
    with pytest.raises(SystemExit, match="--recipe and --start"):
        main(["fit", "--data", str(pipeline["data"]), "--start", str(pipeline["run"]),
              "--recipe", "best", "--out", str(tmp_path / "no")])
