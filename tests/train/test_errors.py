"""train/ raises errors from device.errors that name the setting and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.models.bundle import read_bundle
from device.errors import AesynthError, EvaluationError, ExportError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_bundle"


def test_export_refuses_an_unknown_quantisation_and_int8_without_calibration():
    from train.export import convert

    with pytest.raises(ExportError, match="one of float32, float16, dynamic, int8, got 'int4'"):
        convert(None, "int4")
    with pytest.raises(ExportError, match="int8 export needs calibration frames"):
        convert(None, "int8", None)
    assert issubclass(ExportError, AesynthError) and issubclass(ExportError, ValueError)


def test_evaluation_needs_the_training_scale():
    from train.evaluate import global_max_of

    bundle = read_bundle(FIXTURE, check_models=False)  # logmax features, no global_max
    with pytest.raises(EvaluationError, match="'tiny' records no training.global_max"):
        global_max_of(bundle)
