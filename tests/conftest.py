"""Shared fixtures: where ../shared/data is, and a skip when it is absent; fp32 on every CPU."""

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


@pytest.fixture(autouse=True, scope="session")
def _cpu_dtype_auto_is_fp32():
    """dtype 'auto' on CPU picks bf16 only where the CPU has native bf16; tests pin fp32 so that
    they behave the same on every machine (tests of the bf16 choice patch it back themselves).
    Session-scoped, so that module-scoped fixtures that train models see it too."""
    from blindspot.models import resolve as models

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "cpu_native_bf16", lambda: (False, "tests pin fp32"))
        yield
