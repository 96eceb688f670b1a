"""MIDI 1.0 byte stream → whole messages, as the spec frames them.  Pure, no I/O.

Why our own: python-rtmidi's JACK and ALSA inputs glue every event that follows
a SysEx without its F7 into that SysEx until some later event ends in F7, so
one truncated SysEx (``F0 7D 01 02 03 04``) hides every control change after it.
MIDI 1.0 says any status byte except real-time (F8..FF) ends a SysEx; the bytes
after it are messages again.  :class:`MidiStream` splits what the input hands
over by those rules and counts what it drops.

Rules: a status byte 80..EF starts a channel message (running status: data
bytes after a whole one repeat its status); F0 starts a SysEx, F7 ends it, any
other non-real-time status ends it unfinished (dropped); F1..F6 are system
common (they cancel running status); real-time F8..FF pass through at once,
even inside a SysEx.  Data bytes with no status to belong to are dropped.
"""

from __future__ import annotations

__all__ = ["MidiStream"]

_DATA_BYTES = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
_COMMON_DATA = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0}  # F4, F5: undefined, no data
MAX_SYSEX = 65536  # bytes; a longer SysEx is dropped (nothing we read is a tenth of it)


class MidiStream:
    """Feed raw bytes, get whole messages (lists of ints).  Keeps state across feeds.

    ``dropped`` counts bytes thrown away; ``truncated`` counts SysEx messages
    ended by another status byte (or overlong) instead of F7.
    """

    def __init__(self) -> None:
        self.dropped = 0
        self.truncated = 0
        self._msg: list[int] = []     # the message being collected
        self._need = 0                # data bytes still missing (channel/common)
        self._running: int | None = None
        self._sysex = False

    def reset(self) -> None:
        """Forget a message in progress (a new connection); the counts stay."""
        self._msg, self._need, self._running, self._sysex = [], 0, None, False

    def _end_sysex(self) -> None:
        if self._sysex:
            self.truncated += 1
            self.dropped += len(self._msg)
            self._sysex = False
            self._msg = []

    def feed(self, data: bytes | list[int]) -> list[list[int]]:
        """The whole messages completed by ``data`` (bytes 0..255), in order."""
        out: list[list[int]] = []
        for b in data:
            b &= 0xFF
            if b >= 0xF8:                      # real-time: in place, state untouched
                out.append([b])
                continue
            if self._sysex:
                if b == 0xF7:
                    self._msg.append(b)
                    out.append(self._msg)
                    self._msg, self._sysex = [], False
                    continue
                if b < 0x80:
                    self._msg.append(b)
                    if len(self._msg) > MAX_SYSEX:
                        self._end_sysex()
                        self._running = None  # the rest of it is data without status
                    continue
                self._end_sysex()              # another status ends it: fall through
            if b >= 0x80:
                if self._msg:                  # a message cut short by this status
                    self.dropped += len(self._msg)
                    self._msg = []
                if b == 0xF0:
                    self._sysex, self._msg, self._running = True, [b], None
                elif b == 0xF7:                # an end with no start
                    self.dropped += 1
                    self._running = None
                elif b >= 0xF1:
                    self._running = None
                    need = _COMMON_DATA.get(b)
                    if need is None:
                        self.dropped += 1
                    elif need == 0:
                        out.append([b])
                    else:
                        self._msg, self._need = [b], need
                else:
                    self._running = b
                    self._msg, self._need = [b], _DATA_BYTES[b & 0xF0]
                continue
            # a data byte
            if not self._msg:
                if self._running is None:
                    self.dropped += 1
                    continue
                self._msg, self._need = [self._running], _DATA_BYTES[self._running & 0xF0]
            self._msg.append(b)
            self._need -= 1
            if self._need == 0:
                out.append(self._msg)
                self._msg = []
        return out

    def __repr__(self) -> str:
        return f"<MidiStream dropped={self.dropped} truncated={self.truncated}>"
