"""device/ never imports TensorFlow or train/ (design.md: the two rules of the house)."""

import pkgutil
import subprocess
import sys

import device


def test_device_modules_leave_tensorflow_and_train_out():
    names = sorted(m.name for m in pkgutil.walk_packages(device.__path__, "device."))
    assert "device.sound.features" in names and "device.models.bundle" in names
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'train', 'keras', 'tf_keras'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"device imported {r.stdout.strip()}\n{r.stderr[-2000:]}"


def test_device_source_never_unpickles():
    import pathlib
    for path in pathlib.Path(device.__path__[0]).rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, path
