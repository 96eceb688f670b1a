"""State: the unit controls, their motion (LFOs, motion takes), presets, configuration and commands,
and what is kept on disk (storage.py: presets, USB sticks, folders, the recorder, opened at start).

Pure state and the files that keep it across a power cut; no audio and no hardware I/O.
"""
