"""Shared fixtures for the training tests: small slices of real music (pushover-data)."""

from __future__ import annotations

from pathlib import Path

import pytest

PUSHOVER = Path("/usr/share/pushover/themes")


@pytest.fixture(scope="session")
def pushover_tracks() -> list[Path]:
    tracks = sorted(PUSHOVER.glob("*.ogg"))
    if len(tracks) < 3:
        pytest.fail("pushover-data is not installed (deploy/setup.sh dev installs it)")
    return tracks
