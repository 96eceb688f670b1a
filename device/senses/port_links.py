"""Is our input still connected to the controller's port *instance*?  (JACK, via libjack.)

A controller unplugged and plugged back within a scan interval comes back
under the same port name, so a name check sees nothing; but JACK drops the
connection to the old port when it goes, and never connects the new one to
us.  :class:`JackLinks` asks the server which ports the controller's port is
connected to: when ours is not among them, the port we opened is gone.

python-rtmidi exposes no connection query.  On JACK this talks to libjack
(which python-rtmidi already links) through ctypes; on ALSA it reads the
sequencer's own table, ``/proc/asound/seq/clients`` (:class:`AlsaLinks`).
Elsewhere :func:`links_for` returns None and the name check is all there is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import threading
from typing import Any

log = logging.getLogger(__name__)

PORTS_LOCK = threading.RLock()
"""Held around every creation and deletion of a MIDI client or port in this process
(rtmidi's MidiIn/MidiOut, open_port/close_port/delete, mido's ports, JackLinks).

The suite hung when one thread opened a JACK client while another closed a port (the
controller's watcher opening JackLinks for a new server while the test's fake
controller closed its ports: tests/device/test_midi_faults.py, stop 19), and
python-rtmidi segfaulted once closing a port while another opened one under the same
client name.  python-rtmidi's open and close calls keep the GIL while they wait on the
JACK server, so a Python MIDI callback on JACK's process thread (mido's inputs always
install one; ours poll) can stall the server's cycle; taking turns narrows what can
meet.  The box has two watchers that open and close ports on their own threads
(controller, keyboards).  Reading (port lists, connection queries, messages) does not
take it.  Never held while waiting on another thread."""

_JACK_NO_START_SERVER = 0x01
_SHUTDOWN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class JackLinks:
    """One JACK client (no ports, no process callback) for connection queries."""

    def __init__(self, client_name: str = "aesynth-links"):
        path = ctypes.util.find_library("jack") or "libjack.so.0"
        lib = ctypes.CDLL(path)
        lib.jack_client_open.restype = ctypes.c_void_p
        lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int,
                                         ctypes.POINTER(ctypes.c_int)]
        lib.jack_client_close.argtypes = [ctypes.c_void_p]
        lib.jack_port_by_name.restype = ctypes.c_void_p
        lib.jack_port_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.jack_port_get_all_connections.restype = ctypes.POINTER(ctypes.c_char_p)
        lib.jack_port_get_all_connections.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.jack_free.argtypes = [ctypes.c_void_p]
        status = ctypes.c_int()
        client = lib.jack_client_open(client_name.encode(), _JACK_NO_START_SERVER,
                                      ctypes.byref(status))
        if not client:
            raise OSError(f"JACK client {client_name!r} not opened (status {status.value:#x})")
        self._lib, self._client = lib, client
        self.dead = False  # the server went away: a new JackLinks is needed
        self._on_shutdown = _SHUTDOWN(self._shutdown)  # kept: JACK holds the pointer
        lib.jack_on_shutdown.argtypes = [ctypes.c_void_p, _SHUTDOWN, ctypes.c_void_p]
        lib.jack_on_shutdown(client, self._on_shutdown, None)

    def _shutdown(self, _arg: object) -> None:  # on a JACK thread; sets a flag only
        self.dead = True

    def connections(self, port: str) -> list[str] | None:
        """Full names of the ports ``port`` is connected to; None when ``port`` is gone."""
        if self._client is None or self.dead:
            return None
        lib = self._lib
        handle = lib.jack_port_by_name(self._client, port.encode())
        if not handle:
            return None
        names = lib.jack_port_get_all_connections(self._client, handle)
        if not names:
            return []
        out, i = [], 0
        while names[i] is not None:
            out.append(names[i].decode(errors="replace"))
            i += 1
        lib.jack_free(ctypes.cast(names, ctypes.c_void_p))
        return out

    def linked(self, port: str, ours: str) -> bool:
        """Whether ``port`` (the controller's) is connected to a port named ``…:ours``."""
        conns = self.connections(port)
        return conns is not None and any(c.endswith(":" + ours) for c in conns)

    def close(self) -> None:
        if self._client is not None:
            self._lib.jack_client_close(self._client)
            self._client = None

    def __repr__(self) -> str:
        return f"<JackLinks {'closed' if self._client is None else 'open'}>"


_ADDRESS = re.compile(r" (\d+):(\d+)$")   # rtmidi's ALSA port names end in "client:port"
ALSA_CLIENTS = "/proc/asound/seq/clients"


def alsa_address(port_name: str) -> str | None:
    """"24:0" from an ALSA port name as python-rtmidi lists it ("nanoKONTROL2:… 24:0")."""
    m = _ADDRESS.search(port_name)
    return f"{m.group(1)}:{m.group(2)}" if m else None


def alsa_connections(table: str, address: str) -> list[str] | None:
    """The addresses that ALSA port ``address`` ("24:0") sends to ("Connecting To"), from
    the text of /proc/asound/seq/clients; None when the port is not in it."""
    client, port = address.split(":")
    in_client = found = False
    for line in table.splitlines():
        words = line.split()
        if line.startswith("Client") and len(words) > 1:
            if found:
                return []      # the next client: ours sends nowhere
            in_client = words[1] == client
        elif in_client and line.strip().startswith("Port") and len(words) > 1:
            if found:
                return []      # the next port: ours sends nowhere
            found = words[1] == port
        elif found and line.strip().startswith("Connecting To:"):
            items = line.split(":", 1)[1].split(",")
            return [item.strip().split("[")[0] for item in items if item.strip()]
    return [] if found else None


class AlsaLinks:
    """The same question for ALSA, from the sequencer's table in /proc."""

    def __init__(self, path: str = ALSA_CLIENTS):
        self.path = path
        self.dead = False

    def linked(self, port: str, ours: str) -> bool:
        """Whether ``port`` (the controller's, named with its address) sends to the ALSA
        port ``ours`` ("client:port").  True when either cannot be told (no /proc table,
        a name without an address): never a reconnect on a guess."""
        theirs = alsa_address(port)
        if theirs is None or ":" not in ours:
            return True
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                table = f.read()
        except OSError:
            return True
        conns = alsa_connections(table, theirs)
        return conns is None or ours in conns  # port gone: the name check handles it


_shared: dict[str, JackLinks | AlsaLinks] = {}
_shared_lock = threading.Lock()


def links_for(backend: Any) -> JackLinks | AlsaLinks | None:
    """The process's :class:`JackLinks` for the current JACK server when ``backend`` is
    mido's rtmidi on JACK, else None.

    One client per server for the whole process, never closed by us: ``jack_client_close``
    was seen to block forever here (JACK2 1.9.21, dummy driver, a loaded machine, right
    after other clients of this process closed), and a watcher must not hang on exit.
    The server drops the client when the process ends.
    """
    if backend.name != "mido.backends.rtmidi":
        return None
    if backend.api in (None, "LINUX_ALSA") and os.path.exists(ALSA_CLIENTS):
        return _shared.setdefault("alsa", AlsaLinks())
    if backend.api != "UNIX_JACK":
        return None
    server = os.environ.get("JACK_DEFAULT_SERVER", "default")
    with _shared_lock:
        links = _shared.get(server)
        if links is None or links.dead:  # a restarted server: a client of the new one
            try:
                with PORTS_LOCK:
                    links = _shared[server] = JackLinks()
            except OSError as exc:  # no libjack, no server (yet): the watcher tries again
                log.debug("JACK connection check unavailable: %s", exc)
                return None
        return links
