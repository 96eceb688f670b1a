"""aesynth on the desktop: datasets, Keras models, TFLite export, evaluation.

Imports ``device`` for the features and the bundle contract; never the reverse.
TensorFlow is imported only by the modules that need it, so the bundle writer
and the dataset code work without it.
"""
