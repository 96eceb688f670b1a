"""The senses: what the player touches and sees.

The nanoKONTROL2 and other MIDI inputs, the GPIO buttons, the desktop keyboard, and the
OLED/terminal display. Each turns an input into :mod:`device.state.commands` for the audio
thread, or draws a snapshot of the state; none of them runs on the audio thread.
"""
