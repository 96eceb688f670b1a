"""Which model `aesynth play` starts with: ``[model] path``, else the library's current one,
else the shipped default, else the untrained test bundle (with a warning).

The library (device/models/library.py) remembers the model last played across
restarts; an empty library falls through to ``models/default``.
"""

from __future__ import annotations

import logging
from typing import Any

from device.errors import AesynthError, LibraryError

log = logging.getLogger("device.app")

FIXTURE = "tests/fixtures/tiny_bundle"  # the untrained bundle the tests play


class NoModelError(AesynthError, LookupError):
    """No model to play anywhere it was looked for; names the places."""


def choose_model(cfg: Any) -> tuple[Any, Any]:
    """(bundle, library or None) for the ``[model]`` section ``cfg``.

    With ``path`` set, that bundle and no library.  Otherwise the library of
    ``shipped_dir`` and the user's models, and its current entry; an empty
    library falls back to ``shipped_dir/default``, then to :data:`FIXTURE`.
    Raises NoModelError when none exists, BundleError (an AesynthError) for a
    bundle that does not validate.
    """
    from device.models.bundle import read_bundle
    from device.models.library import ModelLibrary
    from device.state.config import expand, user_models_dir

    if cfg.path:
        return read_bundle(expand(cfg.path)), None
    shipped = expand(cfg.shipped_dir or "models")
    library = ModelLibrary(shipped, user_models_dir(cfg), expand(cfg.state_file))
    try:
        entry = library.current()
    except LibraryError as e:  # an empty library: try the fallbacks below
        log.warning("%s", e)
    else:
        log.info("playing %s (%s)", entry.name, entry.path)
        return library.load(entry), library
    default = shipped / "default"
    if default.exists():
        return read_bundle(default), library
    fixture = expand(FIXTURE)
    if fixture.exists():
        log.warning("no models in %s (models/default is missing): playing the untrained test "
                    "bundle %s; train one with aesynth-train", shipped, fixture)
        return read_bundle(fixture), library
    raise NoModelError(f"no model to play: {default} does not exist; pass --model PATH")
