"""The console: our own log lines at the level asked for, the libraries' chatter only at -vv.

On a desktop with no sound card, no ALSA sequencer and no GPIO, the libraries
we use print on their own: libasound writes every failed lookup to stderr (8
lines per device that does not open, one line each time the MIDI scanner
retries the sequencer: every few seconds), gpiozero warns once per pin factory
it tries, and LiteRT announces its XNNPACK delegate at every model load.  None
of it tells a player anything our own one-line messages do not; it goes to
the ``aesynth.native`` logger at DEBUG instead (``-vv`` shows it).

:func:`setup` is called once by the CLI; :func:`quiet_native_stderr` wraps a
call into a library that writes to file descriptor 2 itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

log = logging.getLogger("aesynth.native")

LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)  # by the number of -v
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Warnings that only say a library is probing what this machine has.
QUIET_WARNINGS = ("PinFactoryFallback", "NativePinFactoryFallback")

PIPE_BYTES = 1 << 20  # what quiet_native_stderr holds at most
_alsa_handler = None  # the ctypes callback must live as long as libasound may call it
_stderr_lock = threading.Lock()


def level_for(verbosity: int) -> int:
    """The log level for ``verbosity`` -v flags: WARNING, INFO (-v), DEBUG (-vv)."""
    return LEVELS[max(0, min(verbosity, len(LEVELS) - 1))]


def setup(verbosity: int = 0) -> None:
    """Logging to stderr at :func:`level_for` ``verbosity``; libasound's messages and
    library probing warnings to DEBUG."""
    logging.basicConfig(level=level_for(verbosity), stream=sys.stderr, format=FORMAT)
    warnings.showwarning = _show_warning
    quiet_alsa()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    level = logging.DEBUG if category.__name__ in QUIET_WARNINGS else logging.WARNING
    logging.getLogger("py.warnings").log(level, "%s: %s (%s:%d)", category.__name__, message,
                                         filename, lineno)


def quiet_alsa() -> bool:
    """Route libasound's error messages (``ALSA lib pcm.c:2666:... Unknown PCM``) to DEBUG
    through ``snd_lib_error_set_handler``; every user of libasound.so.2 in this process
    (pyalsaaudio, python-rtmidi) shares it.  False where libasound is not found."""
    global _alsa_handler
    if _alsa_handler is not None:
        return True
    name = ctypes.util.find_library("asound") or "libasound.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return False
    # void handler(const char *file, int line, const char *function, int err,
    #              const char *fmt, ...): the variadic part is not read (the format is logged).
    # use_errno: libasound returns -errno right after reporting (seq_hw.c: SYSERR(...);
    # return -errno), and Python code in the handler may change errno: ctypes saves it on
    # entry and puts it back on exit (without this, rtmidi crashes on a machine with no
    # sequencer).
    proto = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_int, ctypes.c_char_p, use_errno=True)

    def handler(file: bytes, line: int, function: bytes, err: int, fmt: bytes) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ALSA lib %s:%d:(%s) %s%s", _text(file), line, _text(function),
                      _text(fmt), f": {os.strerror(abs(err))}" if err else "")

    _alsa_handler = proto(handler)
    lib.snd_lib_error_set_handler(_alsa_handler)
    return True


def _text(b: bytes | None) -> str:
    return b.decode(errors="replace") if b else ""


@contextlib.contextmanager
def quiet_native_stderr(keep: Callable[[str], bool] | None = None) -> Iterator[None]:
    """Hold what native code writes to file descriptor 2 during the block; afterwards the
    lines ``keep(line)`` refuses go to DEBUG and the rest back to stderr (a line another
    thread wrote meanwhile is delayed, not lost).  ``keep`` defaults to refusing only
    LiteRT's ``INFO:`` announcements.

    The text is held in a pipe, not a file: a validating child may not create files.  Its
    write end does not block, so a library that writes more than the pipe holds (1 MiB)
    loses the rest rather than hang; where no pipe can be made, nothing is held.
    """
    keep = keep or (lambda line: not line.startswith("INFO: "))
    with _stderr_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no fd 2 (an embedded interpreter)
            yield
            return
        try:
            r, w = os.pipe()
        except OSError:
            os.close(saved)
            yield
            return
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(w, False)
        os.dup2(w, 2)
        os.close(w)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)  # the pipe's last write end closes: the read below ends
            os.close(saved)
            chunks = []
            with os.fdopen(r, "rb") as held:
                chunks.append(held.read())
            text = b"".join(chunks).decode(errors="replace")
    for line in text.splitlines(keepends=True):
        if keep(line.rstrip("\n")):
            sys.stderr.write(line)
        else:
            log.debug("%s", line.rstrip("\n"))
