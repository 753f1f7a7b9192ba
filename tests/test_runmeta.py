"""Run metadata written to every meta.json (blindspot.runmeta)."""

from __future__ import annotations


def test_meta_dtype_has_one_spelling():
    """meta.json says "bfloat16" whether a stage passed the torch dtype or its name."""
    import torch

    from blindspot.runmeta import run_metadata

    assert run_metadata(dtype=torch.bfloat16)["dtype"] == run_metadata(dtype="bfloat16")["dtype"] == "bfloat16"
    assert "dtype" not in run_metadata()
