"""Library output routing (blindspot.logsetup)."""


def test_gguf_conversion_bar_hidden_unless_verbose(capsys):
    """transformers' GGUF loader uses a bare tqdm that disable_progress_bar() misses (issue 13)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from blindspot.logsetup import gguf_bar_hidden

    original, was_disabled = gguf_utils.tqdm, are_progress_bars_disabled()
    disable_progress_bars()
    try:
        with gguf_bar_hidden():
            list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
        assert "Converting" not in capsys.readouterr().err
        assert gguf_utils.tqdm is original
        enable_progress_bars()  # -v: the library's own bar stays
        with gguf_bar_hidden():
            assert gguf_utils.tqdm is original
    finally:
        (disable_progress_bars if was_disabled else enable_progress_bars)()

