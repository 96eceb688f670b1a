"""What every benchmark does last: print its JSON result and keep a copy when asked."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, path: str | None = None) -> int:
    """Print ``result`` as indented JSON on stdout, write it to ``path`` too; returns 0."""
    text = json.dumps(result, indent=1)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
    return 0
