"""The bundle validator refuses each kind of broken bundle with its own message."""

import json
import os
import zipfile
from pathlib import Path

import pytest

from device.models import bundle as bundle_mod
from device.models.bundle import check_bundle, read_bundle
from device.errors import BundleError
from device.sound.features import LOW_LATENCY
from tests.device.bundles import FIXTURE, copy_fixture, edit_manifest, rewrite_model


def problems_of(path: Path, **kw) -> list[str]:
    bundle, problems = check_bundle(path, **kw)
    assert bundle is None, "a broken bundle was accepted"
    return [str(p) for p in problems]


def test_the_fixture_is_valid_and_runs():
    b = read_bundle(FIXTURE)
    assert b.name == "tiny" and b.units == 8
    assert b.frame == LOW_LATENCY
    assert b.encoder.input_shape == (1, 1025) and b.decoder.output_shape == (1, 1025)
    assert b.unit_stats is not None and len(b.unit_stats.mean) == 8
    assert "8 units" in b.describe()


def test_shipped_models_are_valid():
    models = Path(__file__).resolve().parents[2] / "models"
    bundles = [p for p in models.glob("*") if (p / "manifest.json").exists()]
    for path in bundles:
        read_bundle(path)


def test_missing_file(tmp_path):
    b = copy_fixture(tmp_path / "b")
    (b / "decoder.tflite").unlink()
    assert problems_of(b) == ["decoder.file: missing file 'decoder.tflite'"]


def test_missing_manifest(tmp_path):
    b = copy_fixture(tmp_path / "b")
    (b / "manifest.json").unlink()
    assert problems_of(b) == ["manifest.json: missing file 'manifest.json'"]


def test_checksum_mismatch(tmp_path):
    b = copy_fixture(tmp_path / "b")
    data = bytearray((b / "encoder.tflite").read_bytes())
    data[-100] ^= 0xFF
    (b / "encoder.tflite").write_bytes(bytes(data))
    (msg,) = problems_of(b)
    assert msg.startswith("encoder.sha256: checksum mismatch for 'encoder.tflite': manifest ")


def test_unknown_format_version(tmp_path):
    b = copy_fixture(tmp_path / "b")
    edit_manifest(b, lambda m: m.update(format_version=99))
    assert problems_of(b) == ["format_version: must be one of [1], got 99"]


def test_frame_disagrees_with_the_models_tensors(tmp_path):
    """The manifest is self-consistent (n_fft 1024 -> 513 bins) but the models take 1025."""
    b = copy_fixture(tmp_path / "b")

    def smaller(m):
        m.update(n_fft=1024, win_length=1024)
        m["encoder"]["input"]["shape"] = [1, 513]
        m["decoder"]["output"]["shape"] = [1, 513]
    edit_manifest(b, smaller)
    assert problems_of(b) == [
        "encoder.input.shape: the model's input tensor is [1, 1025], the manifest says [1, 513]",
        "decoder.output.shape: the model's output tensor is [1, 1025], the manifest says [1, 513]",
    ]


def test_manifest_shapes_disagree_with_the_frame(tmp_path):
    b = copy_fixture(tmp_path / "b")
    edit_manifest(b, lambda m: m.update(units=16))
    msgs = problems_of(b)
    assert "encoder.output.shape: must be [1, 16] for n_fft=2048 and units=16, got [1, 8]" in msgs
    assert "decoder.input.shape: must be [1, 16] for n_fft=2048 and units=16, got [1, 8]" in msgs


@pytest.mark.parametrize("change, expected", [
    (lambda m: m["normaliser"].update(scale=-1.0), "normaliser: normaliser scale must be > 0"),
    (lambda m: m["normaliser"].update(offset=[0.5] * 7),
     "normaliser: per-bin constants must have n_fft/2+1=1025 values, got 7"),
    (lambda m: m.update(hop_length=100), "does not reconstruct at hop_length=100"),
    (lambda m: m.update(sample_rate=10**9), "sample_rate: sample_rate must be in 8000..192000 Hz"),
    (lambda m: m.update(units=0), "units: must be in 1..4096, got 0"),
    (lambda m: m["unit_stats"].update(min=[2.0] * 8), "unit_stats: min must be <= max"),
    (lambda m: m["unit_stats"].update(mean=[0.5] * 3),
     "unit_stats.mean: must have 8 values (one per unit), got 3"),
    (lambda m: m["encoder"].update(quantization="int4"), "encoder.quantization: must be one of"),
    (lambda m: m.update(name="../evil"), "name: must be 1..64 characters"),
    (lambda m: m.pop("window"), "window: missing"),
    (lambda m: m.update(hop_length="128"), "hop_length must be an integer"),
])
def test_out_of_range_fields(tmp_path, change, expected):
    b = copy_fixture(tmp_path / "b")
    edit_manifest(b, change)
    assert any(expected in p for p in problems_of(b)), problems_of(b)


def test_non_finite_constants_are_refused(tmp_path):
    b = copy_fixture(tmp_path / "b")
    text = (b / "manifest.json").read_text()
    m = json.loads(text)
    m["normaliser"]["scale"] = float("nan")  # json.dumps writes the non-standard NaN
    (b / "manifest.json").write_text(json.dumps(m))
    (msg,) = problems_of(b)
    assert msg.startswith("manifest.json: not valid JSON: non-finite number NaN")


@pytest.mark.parametrize("name", ["../encoder.tflite", "/etc/passwd", "sub/encoder.tflite",
                                  ".hidden"])
def test_names_that_leave_the_bundle(tmp_path, name):
    b = copy_fixture(tmp_path / "b")
    edit_manifest(b, lambda m: m["encoder"].update(file=name))
    (msg,) = problems_of(b)
    assert msg == ("encoder.file: file name must be a plain name inside the bundle "
                   f"([A-Za-z0-9._-], no '/' or '..'), got {name!r}")


def test_symlinked_model_is_refused(tmp_path):
    b = copy_fixture(tmp_path / "b")
    outside = tmp_path / "outside.tflite"
    os.replace(b / "encoder.tflite", outside)
    os.symlink(outside, b / "encoder.tflite")
    assert problems_of(b) == ["encoder.file: 'encoder.tflite' is a symbolic link; not allowed"]


def test_model_over_the_size_cap(tmp_path):
    b = copy_fixture(tmp_path / "b")
    with open(b / "decoder.tflite", "r+b") as f:  # sparse: costs no disk
        f.truncate(bundle_mod.MODEL_MAX_BYTES + 1)
    n = bundle_mod.MODEL_MAX_BYTES + 1
    assert problems_of(b) == [
        f"decoder.file: 'decoder.tflite' is {n} bytes, limit {bundle_mod.MODEL_MAX_BYTES}"]


def test_manifest_over_the_size_cap(tmp_path):
    b = copy_fixture(tmp_path / "b")
    edit_manifest(b, lambda m: m["training"].update(junk="x" * bundle_mod.MANIFEST_MAX_BYTES))
    (msg,) = problems_of(b)
    assert msg.startswith("manifest.json: 'manifest.json' is ") and msg.endswith(
        f"limit {bundle_mod.MANIFEST_MAX_BYTES}")


def test_model_that_is_not_a_flatbuffer(tmp_path):
    b = copy_fixture(tmp_path / "b")
    rewrite_model(b, "encoder", os.urandom(40_000))
    (msg,) = problems_of(b)
    assert msg.startswith("encoder.file: 'encoder.tflite' is not a TFLite flatbuffer")


def test_truncated_flatbuffer_fails_to_load(tmp_path):
    b = copy_fixture(tmp_path / "b")
    rewrite_model(b, "decoder", (b / "decoder.tflite").read_bytes()[:2000])
    msgs = problems_of(b)
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith("decoder.tflite: decoder: TFLite could not load"), msgs


def test_swapped_models_are_caught_by_tensor_shapes(tmp_path):
    b = copy_fixture(tmp_path / "b")
    enc, dec = (b / "encoder.tflite").read_bytes(), (b / "decoder.tflite").read_bytes()
    rewrite_model(b, "encoder", dec)
    rewrite_model(b, "decoder", enc)
    msgs = problems_of(b)
    assert ("encoder.input.shape: the model's input tensor is [1, 8], the manifest says "
            "[1, 1025]") in msgs


def test_every_problem_is_reported_at_once(tmp_path):
    b = copy_fixture(tmp_path / "b")
    edit_manifest(b, lambda m: m.update(units=0, name="", format_version=1, window="box"))
    msgs = problems_of(b)
    assert len(msgs) >= 3


def test_read_bundle_raises_with_every_problem(tmp_path):
    b = copy_fixture(tmp_path / "b")
    (b / "decoder.tflite").unlink()
    with pytest.raises(BundleError) as e:
        read_bundle(b)
    assert e.value.problems[0].field == "decoder.file"
    assert "decoder.file: missing file 'decoder.tflite'" in str(e.value)
    assert isinstance(e.value, ValueError)


# -- zip bundles ---------------------------------------------------------------
def zip_dir(src: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(src.iterdir()):
            z.write(f, prefix + f.name)
    return dest


@pytest.mark.parametrize("prefix", ["", "tiny/"])
def test_zip_bundle_is_read(tmp_path, prefix):
    z = zip_dir(FIXTURE, tmp_path / "tiny.zip", prefix)
    assert read_bundle(z).name == "tiny"


def test_zip_with_traversal_is_refused(tmp_path):
    z = zip_dir(FIXTURE, tmp_path / "evil.zip")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("../../etc/cron.d/evil", "* * * * * root rm -rf /")
    msgs = problems_of(z)
    assert "../../etc/cron.d/evil: path leaves the bundle (absolute or '..'), refused" in msgs


def test_zip_bomb_is_cut_at_the_cap(tmp_path, monkeypatch):
    """A member that inflates past the cap is refused without inflating it all."""
    monkeypatch.setattr(bundle_mod, "MODEL_MAX_BYTES", 1 << 20)
    src = copy_fixture(tmp_path / "b")
    rewrite_model(src, "decoder", b"\0" * (8 << 20))
    z = zip_dir(src, tmp_path / "bomb.zip")
    assert z.stat().st_size < 100_000
    (msg,) = problems_of(z)
    assert msg == f"decoder.file: 'decoder.tflite' is {8 << 20} bytes uncompressed, limit {1 << 20}"


def test_not_a_bundle_at_all(tmp_path):
    f = tmp_path / "song.mp3"
    f.write_bytes(b"ID3")
    assert problems_of(f) == [f"bundle: must be a directory or a .zip file, got {str(f)!r}"]
    assert problems_of(tmp_path / "nothing")[0].startswith("bundle: cannot open")


def test_bundle_without_unit_labels_numbers_its_units():
    b = read_bundle(FIXTURE)
    assert "unit_labels" not in b.manifest
    assert b.unit_labels == ("1", "2", "3", "4", "5", "6", "7", "8")


def test_unit_labels_are_read(tmp_path):
    b = copy_fixture(tmp_path / "b")
    labels = ["body", "air", "low", "sub", "mid", "pres", "noise", "low2"]
    edit_manifest(b, lambda m: m.update(unit_labels=labels))
    assert read_bundle(b, check_models=False).unit_labels == tuple(labels)


@pytest.mark.parametrize("labels, expected", [
    ("body", "unit_labels: must be a list of 8 strings, got str 'body'"),
    (["a"] * 7, "unit_labels: must have 8 labels (one per unit), got 7"),
    (["a"] * 9, "unit_labels: must have 8 labels (one per unit), got 9"),
    (["a"] * 7 + ["toolong"],
     "unit_labels[7]: must be 1..5 printable ASCII characters, got 'toolong'"),
    ([""] + ["a"] * 7, "unit_labels[0]: must be 1..5 printable ASCII characters, got ''"),
    (["a", 2] + ["a"] * 6, "unit_labels[1]: must be 1..5 printable ASCII characters, got 2"),
    (["a", "b\n"] + ["a"] * 6,
     "unit_labels[1]: must be 1..5 printable ASCII characters, got 'b\\n'"),
    (["a", "b", "\u00e9t\u00e9"] + ["a"] * 5,
     "unit_labels[2]: must be 1..5 printable ASCII characters, got '\u00e9t\u00e9'"),
    (["a", None] + ["a"] * 6,
     "unit_labels[1]: must be 1..5 printable ASCII characters, got None"),
], ids=["not-a-list", "too-few", "too-many", "too-long", "empty", "not-a-string",
        "control-char", "not-ascii", "null"])
def test_bad_unit_labels(tmp_path, labels, expected):
    b = copy_fixture(tmp_path / "b")
    edit_manifest(b, lambda m: m.update(unit_labels=labels))
    assert problems_of(b, check_models=False) == [expected]
    with pytest.raises(BundleError, match=r"invalid bundle '.*b': 1 problem") as err:
        read_bundle(b, check_models=False)
    assert expected in str(err.value)
