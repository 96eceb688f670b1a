"""Validate a bundle in a child process with time and memory limits.

A model from a USB stick may hang (a WHILE loop that never ends) or ask for
gigabytes at run time; TFLite would take the player down with it.  So the
full check (:func:`device.models.bundle.check_bundle` with the models loaded and run
on a test frame) happens in a separate Python process that first limits
itself (``RLIMIT_AS`` for memory, ``RLIMIT_CPU``, no file writes, no core
dumps), while the parent enforces a wall-clock timeout and kills the child's
whole process group when it runs over.

Nothing crosses the boundary but a path (argv) and a JSON verdict (stdout):
no pickling, no shared memory.  The limits are set by the child on itself
rather than through ``preexec_fn``, which is unsafe in a threaded parent
(the import runs on a thread beside the audio thread).

Child usage (internal): ``python -I -B -m device.models.validate_child --memory-mib N --cpu-s S PATH``
(the parent runs the same through ``-c`` so that it works from an uninstalled checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from device.errors import Problem

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MEMORY_MIB = 512  # the interpreter with two 32 MB models needs ~250 MiB of address space
DEFAULT_CPU_S = 20
DEFAULT_NICE = 10  # a model burning CPU yields to the player's threads on the same cores
_VERDICT_MAX_BYTES = 1 << 20
# Per-core thread pools and malloc arenas (OpenBLAS under numpy, glibc) reserve
# address space per core: on a many-core machine RLIMIT_AS would fail the
# child at import, before it looked at the model.  One thread, two arenas.
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class Verdict:
    """What the child found: ``ok`` with the bundle's name, or the problems."""

    ok: bool
    problems: list[Problem] = field(default_factory=list)
    name: str | None = None
    summary: str = ""


def validate_in_child(path: str | os.PathLike, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                      memory_mib: int = DEFAULT_MEMORY_MIB, cpu_s: int = DEFAULT_CPU_S,
                      nice: int = DEFAULT_NICE) -> Verdict:
    """Fully check the bundle at ``path`` in a limited child process.

    Never raises for anything the bundle does: a hang, a crash or running
    out of memory comes back as a :class:`Verdict` naming the limit.
    """
    # -I: no user site, no PYTHON* variables, no current directory on the path; the
    # folder holding our package is added explicitly so an uninstalled checkout works too.
    boot = (f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
            f"from device.models.validate_child import _child_main; sys.exit(_child_main(sys.argv[1:]))")
    cmd = [sys.executable, "-I", "-B", "-c", boot, "--memory-mib", str(int(memory_mib)),
           "--cpu-s", str(int(cpu_s)), "--nice", str(int(nice)), os.path.abspath(path)]
    try:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd="/", start_new_session=True,
                                 env={**os.environ, **CHILD_ENV})
    except OSError as e:
        return Verdict(False, [Problem("validation", f"cannot start the checker: {e}")])
    try:
        out, err = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        child.communicate()
        return Verdict(False, [Problem(
            "model", f"loading and running a test frame did not finish within {timeout_s:g} s "
                     f"(the model hangs or is far too slow); killed")])
    rc = child.returncode
    if rc < 0:
        return Verdict(False, [Problem("model", _signal_reason(-rc, memory_mib, cpu_s)
                                       + _tail(err))])
    try:
        verdict = json.loads(out[:_VERDICT_MAX_BYTES].decode("utf-8"))
        ok = bool(verdict["ok"])
        problems = [Problem(str(f), str(m)) for f, m in verdict.get("problems", [])]
    except (ValueError, KeyError, TypeError) as e:
        return Verdict(False, [Problem("validation", f"the checker exited {rc} without a "
                                       f"verdict ({e})" + _tail(err))])
    if ok and not problems and rc == 0:
        return Verdict(True, [], verdict.get("name"), verdict.get("summary", ""))
    if not problems:
        problems = [Problem("validation", f"the checker exited {rc}" + _tail(err))]
    return Verdict(False, problems)


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _signal_reason(sig: int, memory_mib: int, cpu_s: int) -> str:
    name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() else str(sig)
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL):
        return (f"the checker was killed by {name} (CPU limit {cpu_s} s; "
                f"the model hangs or is far too slow)")
    return (f"the checker died of {name} while loading or running the model "
            f"(memory limit {memory_mib} MiB; the model may need more or be malformed)")


def _tail(err: bytes, limit: int = 300) -> str:
    # TFLite's INFO lines say nothing about why a model failed
    text = "\n".join(line for line in err.decode("utf-8", "replace").splitlines()
                     if not line.startswith("INFO: ")).strip()
    if not text:
        return ""
    return " [" + (text if len(text) <= limit else "..." + text[-limit:]) + "]"


# -- the child ------------------------------------------------------------------
def _limit_self(memory_mib: int, cpu_s: int, nice: int) -> None:
    import resource

    # The player's threads may run SCHED_FIFO (scheduling.share_realtime) and we inherit that:
    # a hostile model must not spin at real-time priority.  Dropping it is always allowed.
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    if nice > 0:
        os.nice(nice)

    mem = memory_mib << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))  # SIGXCPU, then SIGKILL
    # The check writes nothing; a write fails with EFBIG instead of killing us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="device.models.validate_child")
    parser.add_argument("--memory-mib", type=int, required=True)
    parser.add_argument("--cpu-s", type=int, required=True)
    parser.add_argument("--nice", type=int, default=DEFAULT_NICE)
    parser.add_argument("path")
    args = parser.parse_args(argv)
    # The verdict gets its own copy of stdout; anything native code prints
    # (TFLite's INFO lines) goes to stderr so it cannot corrupt the JSON.
    verdict_fd = os.dup(1)
    os.dup2(2, 1)
    _limit_self(args.memory_mib, args.cpu_s, args.nice)
    from device.errors import RuntimeUnavailable

    try:
        from device.models.bundle import check_bundle

        bundle, problems = check_bundle(args.path, check_models=True)
        result = ({"ok": True, "name": bundle.name, "summary": bundle.describe()}
                  if bundle is not None else
                  {"ok": False, "problems": [[p.field, p.message] for p in problems]})
    except RuntimeUnavailable as e:  # this machine's interpreter, not the bundle, is at fault
        result = {"ok": False, "problems": [["runtime", str(e)]]}
    except MemoryError:
        result = {"ok": False, "problems": [[
            "model", f"ran out of memory (limit {args.memory_mib} MiB) loading or running "
                     f"the model"]]}
    except Exception as e:  # noqa: BLE001 -- any failure on untrusted input is a verdict
        msg = str(e).strip().splitlines()
        result = {"ok": False, "problems": [[
            "model", f"loading or running a test frame failed: {type(e).__name__}: "
                     f"{' '.join(msg)[:300]} (memory limit {args.memory_mib} MiB)"]]}
    with os.fdopen(verdict_fd, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
