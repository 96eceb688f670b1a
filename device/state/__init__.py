"""State: the unit controls, their motion (LFOs, motion takes), presets, configuration and commands.

Pure state and the files that keep it across a power cut; no audio and no hardware I/O.
"""
