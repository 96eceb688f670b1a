"""The ALSA side of the replug check: /proc/asound/seq/clients read by the pure parser
(no sequencer here: the table is the kernel's format, sound/core/seq/seq_clientmgr.c)."""

from __future__ import annotations

from device.senses.port_links import AlsaLinks, alsa_address, alsa_connections

TABLE = """Client info
  cur  clients : 4
  peak clients : 5
  max  clients : 192

Client   0 : "System" [Kernel]
  Port   0 : "Timer" (Rwe-)
  Port   1 : "Announce" (R-e-)
    Connecting To: 128:0
Client  14 : "Midi Through" [Kernel]
  Port   0 : "Midi Through Port-0" (RWe-)
Client  24 : "nanoKONTROL2" [Kernel]
  Port   0 : "nanoKONTROL2 MIDI 1" (RWeX)
    Connecting To: 128:0, 130:0[real:0]
    Connected From: 131:0
Client 130 : "aesynth" [User Legacy]
  Port   0 : "aesynth in 3" (-We-)
    Connected From: 24:0[real:0]
"""


def test_alsa_addresses_and_connections():
    assert alsa_address("nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0") == "24:0"
    assert alsa_address("RtMidiOut Client:nanoKONTROL2") is None  # a JACK name
    assert alsa_connections(TABLE, "24:0") == ["128:0", "130:0"]
    assert alsa_connections(TABLE, "14:0") == []
    assert alsa_connections(TABLE, "24:1") is None


def test_alsa_links_say_unlinked_only_when_sure(tmp_path):
    table = tmp_path / "clients"
    table.write_text(TABLE)
    links = AlsaLinks(str(table))
    name = "nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0"
    assert links.linked(name, "130:0")
    assert not links.linked(name, "133:0")            # replugged: our subscription is gone
    assert links.linked(name, "aesynth in 3")         # our address unknown: no guess
    assert links.linked("nanoKONTROL2", "130:0")      # no address in the name: no guess
    assert AlsaLinks(str(tmp_path / "none")).linked(name, "133:0")  # no table: no guess
