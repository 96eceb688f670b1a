"""A watchdog on audio periods that never complete, and a close that cannot hang.

A blocking ALSA write waits for the device to take a period; most devices either
take it or fail with an error.  Some never answer: with the output on JACK
(ALSA's ``jack`` plugin), a stopped jackd leaves ``snd_pcm_writei`` polling a
socket nobody writes to, forever, and closing that PCM blocks too.  So the
audio thread does not enter a read or write before the device says it is
ready: :meth:`PeriodWatchdog.wait` polls the PCM's descriptors (ALSA's own
``snd_pcm_wait``, with a timeout) and raises :class:`DeviceStalled` when no
period completes within :attr:`PeriodWatchdog.timeout_s` (derived from the
period).  The audio thread then takes the path an ALSA error takes: close
(:func:`close_pcm`, which gives up on a close that hangs) and reopen with
backoff.

Real-time notes: :meth:`wait` allocates nothing when the device is ready (one
``avail()``); when it has to wait, ``poll`` returns a small list, as the
blocking write it replaces would have waited in C.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any

from device.errors import DeviceError

log = logging.getLogger(__name__)

# No period in this many buffer lengths (periods × period), and at least MIN_TIMEOUT_S:
# a device that is merely slow (a loaded machine starving jackd) is not called lost.
TIMEOUT_BUFFERS = 8
MIN_TIMEOUT_S = 1.0
STOP_CHECK_S = 0.1      # how often a wait looks at the stop flag
CLOSE_TIMEOUT_S = 1.0   # a close that takes longer is abandoned (its thread keeps the PCM)
PCM_STATE_RUNNING = 3  # SND_PCM_STATE_RUNNING (alsaaudio.PCM_STATE_RUNNING), part of ALSA's ABI
_READY = select.POLLIN | select.POLLOUT | select.POLLERR | select.POLLHUP


class DeviceStalled(DeviceError):
    """The audio device accepted (or delivered) no period within the watchdog's timeout."""


class PeriodWatchdog:
    """Waits for PCMs to be ready for one period, at most ``timeout_s``.

    ``period`` frames at ``sample_rate`` Hz with ``periods`` periods in the
    buffer give ``timeout_s = max(MIN_TIMEOUT_S, TIMEOUT_BUFFERS × buffer time)``.
    ``stopping``: when set, a wait returns early (the caller checks it next).
    """

    def __init__(self, *, period: int, sample_rate: int, periods: int,
                 stopping: threading.Event | None = None, min_timeout_s: float = MIN_TIMEOUT_S):
        if period <= 0 or sample_rate <= 0 or periods <= 0:
            raise ValueError(f"period, sample_rate and periods must be > 0, got {period}, "
                             f"{sample_rate}, {periods}")
        self.period = period
        self.timeout_s = max(min_timeout_s, TIMEOUT_BUFFERS * periods * period / sample_rate)
        self._stopping = stopping or threading.Event()
        self._watched: dict[int, tuple[Any, Any, str, int]] = {}  # id -> (pcm, poll, name, period)
        self.stalls = 0

    def watch(self, pcm: Any, name: str, period: int | None = None) -> None:
        """Register ``pcm`` (a pyalsaaudio PCM) under ``name`` for messages, with its own
        ``period`` in frames (default: the watchdog's); at open."""
        descriptors = getattr(pcm, "polldescriptors", None)
        if descriptors is None or not hasattr(pcm, "avail"):
            return  # a stand-in without descriptors (tests): its writes block as they like
        poller = select.poll()
        for fd, events in descriptors():
            poller.register(fd, events)
        self._watched[id(pcm)] = (pcm, poller, name, period or self.period)

    def forget(self, pcm: Any) -> None:
        self._watched.pop(id(pcm), None)

    def wait(self, pcm: Any) -> bool:
        """True once ``pcm`` can take (or give) a period, or an error is pending for its
        read/write to report; False when ``stopping`` was set meanwhile (do not enter the
        read or write: it may never return); raise DeviceStalled after ``timeout_s``."""
        entry = self._watched.get(id(pcm))
        if entry is None:
            return True  # not watched (a test's stand-in): the write blocks as before
        _, poller, name, period = entry
        # Not running (prepared: the read or write starts it; an xrun: it returns -EPIPE), or
        # room for a period already (the usual case when something else paces the loop).
        if pcm.state() != PCM_STATE_RUNNING or pcm.avail() >= period:
            return True
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stalls += 1
                raise DeviceStalled(
                    f"ALSA device {name!r} completed no period of {period} frames in "
                    f"{self.timeout_s:.1f} s: it stopped answering")
            events = poller.poll(min(left, STOP_CHECK_S) * 1000.0)
            if events and pcm.polldescriptors_revents(events) & _READY:
                return True
            if self._stopping.is_set():
                return False
            if pcm.avail() >= period:
                return True

    def __repr__(self) -> str:
        return (f"<PeriodWatchdog period={self.period} timeout={self.timeout_s:.2f}s "
                f"watching={len(self._watched)} stalls={self.stalls}>")


def close_pcm(pcm: Any, name: str = "PCM", timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
    """Close ``pcm``; True when it closed.  A close that does not return within
    ``timeout_s`` (a JACK PCM whose server died) is left to a daemon thread that keeps
    the PCM alive, so the caller can reopen the device meanwhile."""
    errors: list[BaseException] = []

    def close() -> None:
        try:
            pcm.close()
        except Exception as e:  # closing a vanished card may fail; nothing to do
            errors.append(e)

    t = threading.Thread(target=close, name="pcm-close", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        log.warning("closing ALSA %s did not return within %.1f s; left behind (a device "
                    "that stopped answering)", name, timeout_s)
        return False
    if errors:
        log.debug("closing ALSA %s: %s", name, errors[0])
    return True
