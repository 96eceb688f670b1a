"""Real-time scheduling for the player's threads, and names the OS can show.

The audio thread asks for SCHED_FIFO and mlockall (:func:`enable_realtime`);
the app's other threads share a lower real-time priority
(:func:`share_realtime`) because they hold the GIL the audio thread needs.
:func:`name_thread` gives the calling thread its name in the kernel, so
``top -H`` and ``ps -L`` on the box say which thread is busy.
"""

from __future__ import annotations

import ctypes
import os
import threading

_PR_SET_NAME = 15  # prctl(2)
_COMM_LEN = 15     # the kernel keeps 16 bytes with the NUL


def name_thread(name: str | None = None) -> None:
    """Name the calling thread in the kernel (``comm``): ``name``, by default its
    Python name, cut to 15 bytes.  Best effort: Linux only."""
    label = (name or threading.current_thread().name).encode()[:_COMM_LEN]
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(label), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (not Linux): names are a convenience
        pass


def enable_realtime(priority: int) -> list[str]:
    """SCHED_FIFO for the calling thread and mlockall for the process.

    Returns a warning per step that was not permitted (empty when both worked).
    mlockall(MCL_FUTURE) is only tried when locked memory is unlimited (root,
    CAP_IPC_LOCK or limits.conf): under a finite RLIMIT_MEMLOCK it would make
    later allocations fail instead of paging.
    """
    warnings = []
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as e:
        warnings.append(f"SCHED_FIFO priority {priority} not permitted ({e}); the audio thread "
                        "runs at normal priority: grant rtprio (limits.conf, or the service's "
                        "LimitRTPRIO) to avoid xruns under load")
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and os.geteuid() != 0:
        warnings.append(f"mlockall skipped: RLIMIT_MEMLOCK is {soft} bytes, not unlimited "
                        "(set LimitMEMLOCK=infinity); memory may be paged out")
    else:
        libc = ctypes.CDLL(None, use_errno=True)
        mcl_current, mcl_future = 1, 2
        if libc.mlockall(mcl_current | mcl_future) != 0:
            err = ctypes.get_errno()
            warnings.append(f"mlockall failed: {os.strerror(err)} (errno {err})")
    return warnings


def share_realtime(priority: int) -> tuple[int, int] | str:
    """SCHED_FIFO at ``priority`` for the calling thread and every thread it starts later.

    For the app's other threads (MIDI, display, control), below the audio thread's
    priority.  They share Python's GIL with the audio thread: one preempted by an
    ordinary process while it holds the GIL stalls the audio thread for a whole
    scheduler slice (priority inversion).  At real-time priority an ordinary
    process cannot preempt them.  Not shown to matter on the 2-core VM we
    measure on: three A/B pairs under two busy loops gave no difference beyond
    the VM's own hiccups (docs/play.md).  New threads inherit the policy
    (glibc's default PTHREAD_INHERIT_SCHED); SCHED_RESET_ON_FORK is not used
    because the kernel applies it to threads too, so child processes drop
    real-time scheduling themselves (validate_child).

    Returns the previous (policy, priority) for :func:`restore_scheduling`, or a
    warning when not permitted.
    """
    try:
        before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as e:
        return (f"SCHED_FIFO priority {priority} for the MIDI, display and control threads not "
                f"permitted ({e}); a busy machine can then stall the audio thread through "
                "the GIL")
    return before


def restore_scheduling(before: tuple[int, int]) -> None:
    """Undo :func:`share_realtime` for the calling thread."""
    policy, priority = before
    os.sched_setscheduler(0, policy, os.sched_param(priority))
