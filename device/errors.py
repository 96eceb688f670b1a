"""Every error aesynth raises on purpose.

Each subclasses :class:`AesynthError` and the builtin it behaves like, so a
caller can catch ``ValueError`` without knowing us, and a supervisor can catch
``AesynthError`` without catching programming mistakes.
"""

from __future__ import annotations


class AesynthError(Exception):
    """Base of every error aesynth raises on purpose."""


class FrameConfigError(AesynthError, ValueError):
    """A frame configuration (window, hop, FFT size) that cannot work.

    ``field`` names the parameter at fault, for messages about a manifest.
    """

    def __init__(self, message: str, *, field: str = "frame"):
        super().__init__(message)
        self.field = field


class FeatureError(AesynthError, ValueError):
    """A feature normaliser with unusable constants, or input of the wrong shape."""


class BundleError(AesynthError, ValueError):
    """A model bundle that failed validation; ``problems`` lists every reason."""

    def __init__(self, bundle: str, problems: list[Problem]):
        self.bundle = bundle
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid bundle {bundle!r}: {len(self.problems)} problem(s)\n{lines}")


class Problem:
    """One reason a bundle is rejected: the field, what was allowed, what was found."""

    __slots__ = ("field", "message")

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({self.field!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and (self.field, self.message) == (
            other.field,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.field, self.message))


class RuntimeUnavailable(AesynthError, ImportError):
    """No TFLite interpreter (ai_edge_litert or tflite_runtime) could be imported."""


class ModelError(AesynthError, RuntimeError):
    """A TFLite model that does not load or run, or whose tensors do not fit."""


class ControlError(AesynthError, ValueError):
    """A unit control value or index outside its range."""


class DeviceError(AesynthError, OSError):
    """A piece of hardware (sound card, controller, display) that failed; names it."""


class AudioFileError(AesynthError, ValueError):
    """An audio file (the file source) that cannot be read or holds no samples; names it."""


class ConfigError(AesynthError, ValueError):
    """A configuration file or value that cannot work: names the key, the allowed values
    and the value found."""


class LibraryError(AesynthError, LookupError):
    """A model library with no model to offer, or a model that is not in it."""


class ExportError(AesynthError, ValueError):
    """A trained model that cannot be exported as asked (quantisation, calibration
    frames, frame size); names the setting, the allowed values and the value found."""


class FitError(AesynthError, RuntimeError):
    """A training run that diverged (non-finite loss or weights); names the recipe, the
    epoch and the learning rate to lower."""


class EvaluationError(AesynthError, ValueError):
    """A bundle that lacks what an evaluation needs (e.g. the training set's scale)."""


class DataError(AesynthError, RuntimeError):
    """Training data that cannot be found, installed, decoded or loaded (train/data.py)."""
