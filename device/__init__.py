"""aesynth on the box: features, bundles, the real-time engine and its senses.

Nothing in this package imports TensorFlow or ``train``: it runs on a
Raspberry Pi with only numpy and a TFLite interpreter.
"""

__version__ = "0.1.0"
