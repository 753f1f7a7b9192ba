"""Shared fixtures: where ../shared/data is, and a skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    return Path(os.environ.get("BLINDSPOT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real MNLI subset / HANS folder (../shared/data or $BLINDSPOT_DATA); skips if absent."""
    root = shared_data_root()
    if not (root / "mnli-subset").is_dir() or not (root / "hans-regen").is_dir():
        pytest.skip(f"real data not found at {root} (set BLINDSPOT_DATA to the folder holding "
                    "mnli-subset/ and hans-regen/)")
    return root
