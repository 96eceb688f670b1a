"""The sound path: STFT features, the real-time engine, phase, pitch, gain staging, the audio thread.

Everything one hop of audio passes through, from the ALSA capture (or a file) to the
limiter and the ALSA playback, and ``aesynth render`` that runs the same engine offline.
"""
