"""The sound path: STFT features, the real-time engine, phase, pitch, gain staging, audio I/O.

Everything one hop of audio passes through, from the ALSA capture (or a file) to the
limiter and the ALSA playback, and ``aesynth render`` that runs the same engine offline.
With ``[audio] process = "own"`` the engine and the audio thread run in a process of their
own (``audio_child``), which the app reaches through ``remote`` over ``wire``'s frames.
"""
