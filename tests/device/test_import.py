"""USB import: good bundles go in whole, hostile ones are refused with their reason,
and nothing (a kill -9, a pulled stick) leaves a partial model behind."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.models.bundle import read_bundle
from device.cli import main as cli_main
from device.models.library import (
    ImportProgress,
    ModelLibrary,
    UsbWatcher,
    find_bundles,
    import_bundles,
)
from device.models.validate_child import validate_in_child
from tests.device.bundles import edit_manifest, rewrite_model
from tests.device.stick import (
    bomb_zip,
    good_bundle,
    good_zip,
    hostile_model_bundle,
    huge_manifest_bundle,
    manifest_of,
    nan_manifest_bundle,
    symlinked_model_bundle,
    traversal_zip,
    truncated_model_bundle,
    zip_bundle,
)

REPO = Path(__file__).resolve().parents[2]
# Short limits keep the hostile cases quick; the defaults are for a Pi.
FAST = {"timeout_s": 6.0, "cpu_s": 2, "memory_mib": 512}


def installed(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir() if p.name != ".import.lock")


def reasons(report) -> dict[str, str]:
    return {Path(r.source).name: r.reason for r in report.rejected}


def test_a_good_bundle_is_copied_and_plays(tmp_path):
    stick = tmp_path / "stick"
    good_bundle(stick / "mine", "mine")
    report = import_bundles(stick, tmp_path / "models", **FAST)
    assert [(i.name, i.status) for i in report.imported] == [("mine", "new")]
    assert report.rejected == [] and report.ok
    assert installed(tmp_path / "models") == ["mine"]
    b = read_bundle(tmp_path / "models" / "mine", check_models=True)
    assert b.name == "mine"
    assert sorted(os.listdir(tmp_path / "models" / "mine")) == [
        "decoder.tflite", "encoder.tflite", "manifest.json"]


def test_a_zip_is_copied_out_as_a_directory_of_our_own_files(tmp_path):
    stick = tmp_path / "stick"
    stick.mkdir()
    good_zip(stick / "zipped.zip", "zipped", tmp_path)
    report = import_bundles(stick, tmp_path / "models", **FAST)
    assert [i.name for i in report.imported] == ["zipped"]
    target = tmp_path / "models" / "zipped"
    assert target.is_dir() and not target.is_symlink()
    assert read_bundle(target).name == "zipped"


def test_ten_bundles_three_broken_imports_seven_and_names_the_three(tmp_path):
    stick = tmp_path / "stick"
    stick.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for i in range(5):
        good_bundle(stick / f"good{i}", f"good{i}")
    good_zip(stick / "good5.zip", "good5", scratch)
    good_zip(stick / "good6.zip", "good6", scratch)
    truncated_model_bundle(stick / "broken-truncated", "truncated")
    traversal_zip(stick / "broken-traversal.zip", scratch)
    hostile_model_bundle(stick / "broken-nan", "nan", "nan")
    (stick / "notes.txt").write_text("not a bundle")

    seen: list[ImportProgress] = []
    report = import_bundles(stick, tmp_path / "models", progress=seen.append, **FAST)

    assert sorted(i.name for i in report.imported) == [f"good{i}" for i in range(7)]
    why = reasons(report)
    assert sorted(why) == ["broken-nan", "broken-traversal.zip", "broken-truncated"]
    assert "not finite" in why["broken-nan"]
    assert "leaves the bundle" in why["broken-traversal.zip"]
    assert "could not load" in why["broken-truncated"] or "failed" in why["broken-truncated"]
    assert installed(tmp_path / "models") == [f"good{i}" for i in range(7)]
    assert not (tmp_path / "evil.tflite").exists()
    # progress: every bundle ends imported or rejected, in order, with the total
    ends = [(p.index, p.stage) for p in seen if p.stage in ("imported", "rejected")]
    assert [i for i, _ in ends] == list(range(10)) and {p.total for p in seen} == {10}
    assert sum(s == "rejected" for _, s in ends) == 3
    assert report.summary() == "USB: 7 ok, 3 rejected"
    assert seen[-1].short() == "USB 10/10 imported" and len(report.summary()) <= 25


@pytest.mark.parametrize(("make", "expect"), [
    (lambda d, t: truncated_model_bundle(d / "b", "trunc"), "could not load"),
    (lambda d, t: hostile_model_bundle(d / "b", "narrow", "narrow"), "output tensor is [1, 4]"),
    (lambda d, t: hostile_model_bundle(d / "b", "nan", "nan"), "not finite"),
    (lambda d, t: nan_manifest_bundle(d / "b", "nanjson"), "non-finite number NaN"),
    (lambda d, t: huge_manifest_bundle(d / "b", "huge"), "limit 1048576"),
    (lambda d, t: symlinked_model_bundle(d / "b", "link"), "symbolic link"),
    (lambda d, t: traversal_zip(d / "b.zip", t), "leaves the bundle"),
    (lambda d, t: bomb_zip(d / "b.zip", t), "limit 33554432"),
], ids=["truncated", "wrong-shape", "nan-weights", "nan-in-manifest", "huge-manifest",
        "symlink", "traversal", "zip-bomb"])
def test_each_broken_bundle_is_rejected_with_its_reason(tmp_path, make, expect):
    stick = tmp_path / "stick"
    stick.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    src = make(stick, scratch)
    report = import_bundles(src, tmp_path / "models", **FAST)
    assert report.imported == []
    assert len(report.rejected) == 1
    assert expect in report.rejected[0].reason
    assert installed(tmp_path / "models") == []


def test_a_deeply_nested_or_giant_number_manifest_is_rejected_not_raised(tmp_path):
    stick = tmp_path / "stick"
    good_bundle(stick / "nested", "nested")
    (stick / "nested" / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    good_bundle(stick / "number", "number")
    (stick / "number" / "manifest.json").write_text('{"units": ' + "9" * 100_000 + "}")
    report = import_bundles(stick, tmp_path / "models", **FAST)
    why = reasons(report)
    assert sorted(why) == ["nested", "number"]
    assert why["nested"].startswith("manifest.json: not valid JSON")
    assert why["number"].startswith("manifest.json: not valid JSON")
    assert installed(tmp_path / "models") == []


def test_a_symlinked_aesynth_folder_on_a_stick_is_not_followed(tmp_path):
    elsewhere = tmp_path / "box-private"
    good_bundle(elsewhere / "private", "private")
    stick = tmp_path / "stick"
    stick.mkdir()
    os.symlink(elsewhere, stick / "aesynth")
    assert find_bundles(stick) == []


def test_a_symlinked_bundle_directory_is_refused(tmp_path):
    real = good_bundle(tmp_path / "elsewhere", "linked")
    stick = tmp_path / "stick"
    stick.mkdir()
    os.symlink(real, stick / "linked")
    report = import_bundles(stick, tmp_path / "models", **FAST)
    assert [Path(r.source).name for r in report.rejected] == ["linked"]
    assert "must be a directory or a .zip" in report.rejected[0].reason
    assert installed(tmp_path / "models") == []


def test_hanging_and_memory_eating_models_are_killed_while_the_player_plays(tmp_path):
    """A stand-in audio loop ticks on its own thread while the import runs on another;
    it must keep ticking during the hang and the memory hog (the child is killed,
    not us)."""
    stick = tmp_path / "stick"
    hostile_model_bundle(stick / "a-hang", "hang", "hang")
    hostile_model_bundle(stick / "b-hog", "hog", "hog")
    good_bundle(stick / "c-fine", "fine")

    ticks = 0
    stop = threading.Event()

    def audio_loop() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.005)

    marks: dict[tuple[str, str], int] = {}

    def progress(p: ImportProgress) -> None:
        marks[(Path(p.source).name, p.stage)] = ticks

    player = threading.Thread(target=audio_loop)
    player.start()
    result = {}
    importer = threading.Thread(target=lambda: result.update(report=import_bundles(
        stick, tmp_path / "models", progress=progress, **FAST)))
    importer.start()
    importer.join()
    stop.set()
    player.join()

    report = result["report"]
    assert [i.name for i in report.imported] == ["fine"]
    why = reasons(report)
    assert "CPU limit 2 s" in why["a-hang"] or "did not finish within" in why["a-hang"]
    assert "memory limit 512 MiB" in why["b-hog"]
    # the player ticked all through the hang's validation
    assert marks[("a-hang", "rejected")] - marks[("a-hang", "validating")] > 20
    assert player.is_alive() is False and ticks > 20


def test_wall_clock_timeout_kills_a_hanging_check(tmp_path):
    b = hostile_model_bundle(tmp_path / "hang", "hang", "hang")
    verdict = validate_in_child(b, timeout_s=1.0, cpu_s=60)
    assert not verdict.ok
    assert "did not finish within 1 s" in str(verdict.problems[0])


def test_cpu_limit_kills_a_hanging_check(tmp_path):
    b = hostile_model_bundle(tmp_path / "hang", "hang", "hang")
    verdict = validate_in_child(b, timeout_s=120, cpu_s=1)
    assert not verdict.ok
    assert "killed by SIGXCPU (CPU limit 1 s" in str(verdict.problems[0])


def _checker_environ() -> dict[str, str] | None:
    """The environment of our running validate_child process, read from /proc."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat_fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes()
            if int(stat_fields[1]) != os.getpid() or b"validate_child" not in cmdline:
                continue
            raw = (proc / "environ").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        return dict(kv.split("=", 1) for kv in raw.decode().split("\0") if "=" in kv)
    return None


def test_the_checker_runs_with_one_blas_thread_and_few_malloc_arenas(tmp_path, monkeypatch):
    # A buffer per BLAS thread and a malloc arena per core would exhaust RLIMIT_AS
    # at import on a many-core machine, whatever the model.  (This machine has too
    # few cores to show the failure itself, so the child's environment is checked.)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MALLOC_ARENA_MAX"):
        monkeypatch.setenv(var, "64")
    b = hostile_model_bundle(tmp_path / "hang", "hang", "hang")  # keeps the child alive
    done = threading.Event()
    checker = threading.Thread(target=lambda: (validate_in_child(b, timeout_s=3.0, cpu_s=60),
                                               done.set()))
    checker.start()
    env = None
    while env is None and not done.is_set():
        env = _checker_environ()
        time.sleep(0.01)
    checker.join()
    assert env is not None, "the checker process was not seen"
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["OMP_NUM_THREADS"] == "1"
    assert env["MALLOC_ARENA_MAX"] == "2"


def test_same_name_identical_is_unchanged_and_different_replaces(tmp_path):
    models = tmp_path / "models"
    good_bundle(tmp_path / "v1", "tiny", description="version one")
    good_bundle(tmp_path / "v2", "tiny", description="version two")
    assert import_bundles(tmp_path / "v1", models, **FAST).imported[0].status == "new"
    assert import_bundles(tmp_path / "v1", models, **FAST).imported[0].status == "unchanged"
    assert import_bundles(tmp_path / "v2", models, **FAST).imported[0].status == "replaced"
    assert manifest_of(models / "tiny")["description"] == "version two"
    assert installed(models) == ["tiny"]


def test_two_bundles_with_one_name_on_a_stick_the_second_is_refused(tmp_path):
    stick = tmp_path / "stick"
    good_bundle(stick / "a", "same")
    good_bundle(stick / "b", "same", description="other")
    report = import_bundles(stick, tmp_path / "models", **FAST)
    assert [i.source for i in report.imported] == [str(stick / "a")]
    assert "also the name of" in reasons(report)["b"]


def test_stick_pulled_mid_import_leaves_no_partial_model(tmp_path):
    stick = tmp_path / "stick"
    for i in range(5):
        good_bundle(stick / f"m{i}", f"m{i}")

    def pull(p: ImportProgress) -> None:
        if p.index == 2 and p.stage == "checking":
            shutil.rmtree(stick)  # the stick is gone before bundle 2 is read

    report = import_bundles(stick, tmp_path / "models", progress=pull, **FAST)
    assert [i.name for i in report.imported] == ["m0", "m1"]
    assert sorted(reasons(report)) == ["m2", "m3", "m4"]
    assert all("cannot open" in r for r in reasons(report).values())
    assert installed(tmp_path / "models") == ["m0", "m1"]


def test_a_file_vanishing_mid_bundle_leaves_no_partial_model(tmp_path):
    stick = tmp_path / "stick"
    good_bundle(stick / "m0", "m0")

    def yank(p: ImportProgress) -> None:
        if p.stage == "checking":
            os.unlink(stick / "m0" / "decoder.tflite")

    report = import_bundles(stick, tmp_path / "models", progress=yank, **FAST)
    assert report.imported == [] and "missing file 'decoder.tflite'" in reasons(report)["m0"]
    assert installed(tmp_path / "models") == []


# -- kill -9 during import --------------------------------------------------------
_IMPORT = ("import sys; from device.models.library import import_bundles; "
           "import_bundles(sys.argv[1], sys.argv[2], timeout_s=20, cpu_s=10)")


def run_import_killed_at(point: str, src: Path, models: Path) -> int:
    env = dict(os.environ, AESYNTH_CRASH_AT=point)
    proc = subprocess.run([sys.executable, "-c", _IMPORT, str(src), str(models)], env=env,
                          cwd=REPO, capture_output=True, timeout=120)
    return proc.returncode


@pytest.mark.parametrize("point", ["import-after-copy", "import-after-validate",
                                   "import-between-renames"])
def test_kill_9_during_a_replace_leaves_the_previous_model_whole(tmp_path, point):
    models = tmp_path / "models"
    good_bundle(tmp_path / "v1", "tiny", description="version one")
    good_bundle(tmp_path / "v2", "tiny", description="version two")
    import_bundles(tmp_path / "v1", models, **FAST)

    assert run_import_killed_at(point, tmp_path / "v2", models) == -signal.SIGKILL
    leftovers = [n for n in installed(models) if n.startswith(".")]
    assert leftovers, "the kill should have left something to clean up"

    lib = ModelLibrary(None, models, tmp_path / "state.json")  # the next boot
    assert installed(models) == ["tiny"]
    assert manifest_of(models / "tiny")["description"] == "version one"
    assert lib.load(lib.current(), check_models=True).name == "tiny"


def test_kill_9_during_a_first_import_leaves_nothing(tmp_path):
    models = tmp_path / "models"
    good_bundle(tmp_path / "new", "new")
    assert run_import_killed_at("import-after-copy", tmp_path / "new", models) == -9
    ModelLibrary(None, models, tmp_path / "state.json")
    assert installed(models) == []


_FULL_DISK = """
import resource, signal, sys
from device.models.library import import_bundles
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))  # the models are 33 KB each
report = import_bundles(sys.argv[1], sys.argv[2])
print(report.lines()[0])
"""


def test_a_full_disk_rejects_the_bundle_and_leaves_no_partial_copy(tmp_path):
    good_bundle(tmp_path / "stick" / "big", "big")
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path / "stick"),
                           str(tmp_path / "models")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "rejected: models directory: cannot install into" in proc.stdout
    assert "File too large" in proc.stdout
    assert installed(tmp_path / "models") == []


# -- discovery and the CLI -----------------------------------------------------------
def test_find_bundles_on_a_stick_root_and_its_aesynth_folder(tmp_path):
    stick = tmp_path / "stick"
    good_bundle(stick / "b-root", "root")
    good_bundle(stick / "aesynth" / "a-inner", "inner")
    (stick / "photos").mkdir()
    zip_bundle(stick / "b-root", stick / "z.zip")
    (stick / ".hidden.zip").write_bytes(b"")
    names = [p.name for p in find_bundles(stick)]
    assert names == ["b-root", "z.zip", "a-inner"]
    assert find_bundles(stick / "b-root") == [stick / "b-root"]


def test_cli_import_prints_a_line_per_bundle_and_exits_1_on_rejects(tmp_path, capsys):
    stick = tmp_path / "stick"
    good_bundle(stick / "ok", "ok")
    truncated_model_bundle(stick / "bad", "bad")
    rc = cli_main(["import", str(stick), "--models-dir", str(tmp_path / "models")])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert out[0] == f"{stick / 'ok'}: imported as 'ok'"
    assert out[1].startswith(f"{stick / 'bad'}: rejected: ") and len(out) == 2
    rc = cli_main(["import", str(stick / "ok"), "--models-dir", str(tmp_path / "models")])
    assert rc == 0 and "unchanged" in capsys.readouterr().out


def test_cli_import_of_nothing_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["import", str(tmp_path / "empty"), "--models-dir",
                     str(tmp_path / "m")]) == 1
    assert "no bundles found" in capsys.readouterr().out
    assert import_bundles(tmp_path / "empty", tmp_path / "m").summary() == "USB: no models found"
    assert cli_main(["import", str(tmp_path / "nope"), "--models-dir",
                     str(tmp_path / "m")]) == 1


def test_cli_import_into_an_unusable_models_dir_names_it(tmp_path, capsys):
    good_bundle(tmp_path / "stick" / "x", "x")
    (tmp_path / "afile").write_text("")
    assert cli_main(["import", str(tmp_path / "stick"), "--models-dir",
                     str(tmp_path / "afile" / "models")]) == 1
    assert f"cannot import into '{tmp_path / 'afile' / 'models'}'" in capsys.readouterr().out


def test_aesynth_import_smoke(tmp_path):
    """The installed command, as a user runs it (default limits, env models dir)."""
    good_bundle(tmp_path / "stick" / "smoke", "smoke")
    env = dict(os.environ, AESYNTH_MODELS_DIR=str(tmp_path / "models"))
    proc = subprocess.run([sys.executable, "-m", "device.cli", "import",
                           str(tmp_path / "stick")], env=env, capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"{tmp_path / 'stick' / 'smoke'}: imported as 'smoke'"
    assert installed(tmp_path / "models") == ["smoke"]


# -- hypothesis: whatever the stick holds, import never raises or leaves debris --------
_json = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**12)
                     | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=12)
_FIELDS = ["format_version", "name", "description", "sample_rate", "n_fft", "win_length",
           "hop_length", "window", "synthesis_length", "normaliser", "units", "encoder",
           "decoder", "unit_stats", "training", ("encoder", "file"), ("encoder", "sha256"),
           ("encoder", "input"), ("decoder", "output"), ("decoder", "quantization"),
           ("normaliser", "kind"), ("normaliser", "scale"), ("unit_stats", "min")]


def check_outcome(report, models: Path, total: int) -> None:
    assert len(report.imported) + len(report.rejected) == total
    for r in report.rejected:
        assert r.problems and all(p.field and p.message for p in r.problems)
    assert installed(models) == sorted(i.name for i in report.imported)
    for i in report.imported:
        read_bundle(models / i.name, check_models=False)


@settings(max_examples=30, deadline=None)
@given(edits=st.lists(st.tuples(st.sampled_from(_FIELDS), st.none() | _json),
                      min_size=1, max_size=3))
def test_any_manifest_damage_is_imported_whole_or_rejected_with_reasons(edits):
    with tempfile.TemporaryDirectory(prefix="aesynth-hyp-") as tmp:
        tmp = Path(tmp)
        b = good_bundle(tmp / "stick" / "b", "b")

        def damage(m: dict) -> None:
            for where, value in edits:
                d, key = (m, where) if isinstance(where, str) else (m.get(where[0]), where[1])
                if not isinstance(d, dict):
                    continue
                if value is None:
                    d.pop(key, None)
                else:
                    d[key] = value

        edit_manifest(b, damage)
        report = import_bundles(tmp / "stick", tmp / "models", **FAST)
        check_outcome(report, tmp / "models", 1)


@settings(max_examples=12, deadline=None)
@given(cut=st.integers(0, 33000), flips=st.lists(st.tuples(st.integers(0, 33000),
                                                           st.integers(1, 255)), max_size=8),
       role=st.sampled_from(["encoder", "decoder"]))
def test_any_model_byte_damage_is_caught_by_tflite_in_the_child(cut, flips, role):
    """The checksum is updated, so only loading and running the model can tell."""
    with tempfile.TemporaryDirectory(prefix="aesynth-hyp-") as tmp:
        tmp = Path(tmp)
        b = good_bundle(tmp / "stick" / "b", "b")
        data = bytearray((b / f"{role}.tflite").read_bytes())
        for pos, x in flips:
            data[pos % len(data)] ^= x
        data = bytes(data[:cut]) if cut < len(data) else bytes(data)
        rewrite_model(b, role, data)
        report = import_bundles(tmp / "stick", tmp / "models", **FAST)
        check_outcome(report, tmp / "models", 1)
        if cut < 1000:
            assert report.rejected, "a model of under 1000 bytes cannot be valid"


@settings(max_examples=25, deadline=None)
@given(names=st.lists(st.text(st.sampled_from("ab./\\:-_ "), min_size=1, max_size=12),
                      min_size=1, max_size=5, unique=True))
def test_zip_member_names_never_write_outside_the_models_dir(names):
    with tempfile.TemporaryDirectory(prefix="aesynth-hyp-") as tmp:
        tmp = Path(tmp)
        src = good_bundle(tmp / "src", "zipped")
        (tmp / "stick").mkdir()
        z = zip_bundle(src, tmp / "stick" / "z.zip")
        with zipfile.ZipFile(z, "a") as zf:
            for n in names:
                zf.writestr(n, b"x" * 10)
        before = sorted(str(p) for p in tmp.rglob("*"))
        report = import_bundles(tmp / "stick", tmp / "models", **FAST)
        check_outcome(report, tmp / "models", 1)
        after = sorted(str(p) for p in tmp.rglob("*") if not str(p).startswith(
            str(tmp / "models")))
        assert after == [p for p in before if not p.startswith(str(tmp / "models"))]
        if report.imported:
            assert sorted(os.listdir(tmp / "models" / "zipped")) == [
                "decoder.tflite", "encoder.tflite", "manifest.json"]


# -- the USB watcher ------------------------------------------------------------------
def test_watcher_imports_a_stick_once_per_insertion(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    reports: queue.Queue = queue.Queue()
    stages: list[str] = []
    watcher = UsbWatcher(media, reports.put, tmp_path / "models", poll_s=0.02,
                         require_mount=False, on_progress=lambda p: stages.append(p.stage),
                         **FAST)
    with watcher:
        assert watcher.current_stick is None
        stick = media / "STICK"
        good_bundle(tmp_path / "staging" / "one", "one")
        hostile_model_bundle(tmp_path / "staging" / "two", "two", "narrow")
        os.rename(tmp_path / "staging", stick)  # "inserted": appears whole
        report = reports.get(timeout=120)
        assert [i.name for i in report.imported] == ["one"]
        assert [Path(r.source).name for r in report.rejected] == ["two"]
        assert watcher.current_stick == stick
        time.sleep(0.2)
        assert reports.empty(), "the same stick must not be imported twice"
        os.rename(stick, tmp_path / "pulled")
        while watcher.current_stick is not None:
            time.sleep(0.02)
        os.rename(tmp_path / "pulled", stick)
        again = reports.get(timeout=120)
        assert [(i.name, i.status) for i in again.imported] == [("one", "unchanged")]
    assert stages[:2] == ["checking", "installing"] and "rejected" in stages
    assert installed(tmp_path / "models") == ["one"]


def test_watcher_without_a_mount_root_or_mounts_finds_nothing(tmp_path):
    seen: list = []
    with UsbWatcher(tmp_path / "missing", seen.append, tmp_path / "models",
                    poll_s=0.01) as w:
        assert w.poll() == [] and w.current_stick is None
    (tmp_path / "media" / "notamount").mkdir(parents=True)
    w = UsbWatcher(tmp_path / "media", seen.append, tmp_path / "models")
    assert w.poll() == [] and seen == []  # a plain folder is not a mounted stick


def test_closing_the_watcher_stops_an_import_between_bundles(tmp_path):
    media = tmp_path / "media"
    for i in range(4):
        good_bundle(media / "s" / f"m{i}", f"m{i}")
    reports: queue.Queue = queue.Queue()
    box: dict = {}

    def progress(p: ImportProgress) -> None:
        if p.index == 1 and p.stage == "imported":
            box["w"].close()  # shutdown mid-import, from the watcher's own thread

    w = UsbWatcher(media, reports.put, tmp_path / "models", require_mount=False,
                   on_progress=progress, poll_s=0.02, **FAST)
    box["w"] = w
    w.start()
    report = reports.get(timeout=120)
    assert [i.name for i in report.imported] == ["m0", "m1"]
    assert all("shutting down" in r.reason for r in report.rejected)
    assert len(report.rejected) == 2
    w.close()  # now from outside: joins the finished thread
    assert "stopped" in repr(w)


def test_watcher_survives_a_failing_report_callback(tmp_path):
    media = tmp_path / "media"
    good_bundle(media / "s" / "one", "one")

    def broken(report):
        raise RuntimeError("display gone")

    w = UsbWatcher(media, broken, tmp_path / "models", require_mount=False, **FAST)
    assert [i.name for r in w.poll() for i in r.imported] == ["one"]


def test_watcher_reports_a_models_directory_it_cannot_write(tmp_path):
    media = tmp_path / "media"
    good_bundle(media / "s" / "one", "one")
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data partition's folder should be")
    seen = []
    w = UsbWatcher(media, seen.append, blocker / "models", require_mount=False, **FAST)
    w.poll()
    assert len(seen) == 1, "the display must hear why nothing was imported"
    report = seen[0]
    assert report.imported == [] and len(report.rejected) == 1
    assert report.rejected[0].problems[0].field == "models directory"
    assert str(blocker / "models") in report.rejected[0].reason
    assert report.summary() == "USB: 1 rejected"
    assert w.poll() == [] and len(seen) == 1  # the same stick is not retried every poll


# -- a real mounted stick (an ext4 image on a loop device) -----------------------------
@pytest.fixture
def mount_stick(tmp_path):
    """mount(content_dir, at) loop-mounts an ext4 image of ``content_dir`` read-only.

    Needs root and loop devices (as on our CI containers); skips itself elsewhere.
    """
    mounted: list[Path] = []

    def mount(content: Path, at: Path) -> Path:
        img = tmp_path / f"{at.name}.img"
        subprocess.run(["truncate", "-s", "8M", str(img)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-d", str(content), str(img)], check=True)
        at.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-o", "loop,ro", str(img), str(at)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot loop-mount here (needs root and /dev/loop*): "
                        f"{proc.stderr.strip()}")
        mounted.append(at)
        return at

    yield mount
    for at in mounted:
        subprocess.run(["umount", "-l", str(at)], capture_output=True)


def umount(at: Path) -> None:
    subprocess.run(["umount", "-l", str(at)], check=True)


def test_watcher_imports_a_really_mounted_stick_and_notices_its_removal(tmp_path,
                                                                         mount_stick):
    content = tmp_path / "content"
    good_bundle(content / "aesynth" / "mounted", "mounted")
    media = tmp_path / "media"
    (media / "not-mounted").mkdir(parents=True)
    good_bundle(media / "not-mounted" / "ignored", "ignored")
    reports: queue.Queue = queue.Queue()
    with UsbWatcher(media, reports.put, tmp_path / "models", poll_s=0.02, **FAST) as w:
        stick = mount_stick(content, media / "STICK")
        report = reports.get(timeout=120)
        assert [i.name for i in report.imported] == ["mounted"] and report.ok
        assert w.current_stick == stick
        umount(stick)
        while w.current_stick is not None:
            time.sleep(0.02)
    assert installed(tmp_path / "models") == ["mounted"]


def test_a_mounted_stick_pulled_mid_import_leaves_no_partial_model(tmp_path, mount_stick):
    content = tmp_path / "content"
    for i in range(4):
        good_bundle(content / f"m{i}", f"m{i}")
    stick = mount_stick(content, tmp_path / "media" / "STICK")

    def pull(p: ImportProgress) -> None:
        if p.index == 1 and p.stage == "validating":
            umount(stick)  # gone while bundle 1 is being validated

    report = import_bundles(stick, tmp_path / "models", progress=pull, **FAST)
    assert [i.name for i in report.imported] == ["m0", "m1"]  # m1 was already in memory
    assert sorted(reasons(report)) == ["m2", "m3"]
    assert installed(tmp_path / "models") == ["m0", "m1"]
