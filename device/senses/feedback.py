"""What the player sees follows the sound: the display and the controller LEDs (the ui thread).

The engine publishes an immutable snapshot each hop (design.md); :class:`Feedback` polls it
at the display's frame rate and, only when something shown has changed, builds a
:class:`~device.senses.display.DisplayState` and hands it to the display and to the
controller's LEDs.  The same thread offers the controls to the last-state keeper (saved
across restarts), logs the first audio period, and stops the app when the audio thread
has failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("device.app")  # one logger name for the player, as before the split


def display_state(snap: Any, stats: Any, *, message: str | None = None, note: str | None = None,
                  gain_reduction_db: int = 0, warning: str | None = None,
                  pickup: tuple[str, ...] = ()) -> Any:
    """The :class:`~device.senses.display.DisplayState` for an engine snapshot and the audio
    loop's stats, or ``None`` when the display module cannot be imported (no Pillow).

    The message line shows, first to last: the audio device lost or missing, ``message``
    (what was just said), ``warning`` (the health's), ``note`` (a standing one: "no sound
    card").  ``gain_reduction_db`` is the limiter's, in whole dB; ``pickup`` the
    controller's soft-takeover hints.
    """
    try:
        from device.senses.display import DisplayState
    except ModuleNotFoundError:
        return None
    message = message or warning or note
    if not stats.connected:
        message = "audio device lost: reopening" if stats.error else "no sound card"
    return DisplayState(controls=snap.controls, mode=snap.mode, model=snap.model,
                        playing=stats.playing, xruns=stats.xruns, message=message,
                        stopped=getattr(stats, "stopped", False), pickup=pickup,
                        motion=getattr(snap, "motion", "stop"),
                        note=getattr(snap, "note", ""),
                        labels=snap.labels,
                        gain_reduction_db=gain_reduction_db)


class Feedback:
    """Keeps the display and the controller LEDs on the engine's latest snapshot.

    ``engine`` publishes ``snapshot`` and ``gain_reduction_db``; ``loop`` is the
    :class:`~device.sound.audio.AudioLoop` (its ``stats``, ``first_period_at``,
    ``failure``).  ``display`` (``show(state)``), ``midi`` (``pickup_hints()``,
    ``update_leds(state)``), ``health`` (``display_warning()``) and ``last_state``
    (``offer(model, controls)``) are each optional.  ``message()`` returns what the
    display should say now; ``note`` is shown when nothing else is.  ``on_failure()`` is
    called once, and the loop ends, when the audio thread has failed.  ``max_fps`` (frames
    a second, > 0) is how often the snapshot is polled.
    """

    def __init__(self, engine: Any, loop: Any, *, message: Callable[[], str | None],
                 on_failure: Callable[[], None], display: Any = None, midi: Any = None,
                 health: Any = None, last_state: Any = None, note: str | None = None,
                 max_fps: float = 30.0):
        self.engine = engine
        self.loop = loop
        self.display = display
        self.midi = midi
        self.health = health
        self.last_state = last_state
        self.note = note
        self._message = message
        self._on_failure = on_failure
        self._period = 1.0 / max_fps
        self.state: Any = None  # the last DisplayState shown
        self.first_period_logged = False

    def run(self, stopping: threading.Event) -> None:
        """Poll every ``1 / max_fps`` s until ``stopping`` is set or the audio thread fails
        (the body of the ui thread)."""
        last: tuple = ()
        while not stopping.wait(self._period):
            if not self.first_period_logged and self.loop.first_period_at is not None:
                self.first_period_logged = True
                # The bench reads this line: wall-clock time of the first period written.
                log.info("first audio period written at %.6f (wall clock)",
                         time.time() - (time.monotonic() - self.loop.first_period_at))
            if self.loop.failure is not None:
                self._on_failure()
                return
            snap, stats = self.engine.snapshot, self.loop.stats
            # The snapshot itself, not its id(): a freed snapshot's id can be reused.
            # The limiter's meter in whole dB: a redraw when it moves by one (the OLED's
            # 30 frames a second at most still apply).
            gr = int(round(self.engine.gain_reduction_db))
            hints = self.midi.pickup_hints() if self.midi is not None else ()
            warning = self.health.display_warning() if self.health is not None else None
            message = self._message()
            key = (snap, stats.playing, stats.xruns, message, stats.connected, gr, warning,
                   getattr(stats, "stopped", False), hints)
            if len(last) == len(key) and key[0] is last[0] and key[1:] == last[1:]:
                continue
            last = key
            if self.last_state is not None:
                self.last_state.offer(snap.model, snap.controls)
            state = display_state(snap, stats, message=message, note=self.note,
                                  gain_reduction_db=gr, warning=warning, pickup=hints)
            if state is None:
                continue
            self.state = state
            if self.display is not None:
                self.display.show(state)
            if self.midi is not None:
                self.midi.update_leds(state)

    def __repr__(self) -> str:
        return (f"<Feedback display={self.display is not None} midi={self.midi is not None} "
                f"shown={self.state is not None}>")
