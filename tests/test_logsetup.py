"""Library output routing (blindspot.logsetup)."""

import huggingface_hub.utils


def test_gguf_conversion_bar_hidden_unless_verbose(capsys, monkeypatch):
    """transformers' GGUF loader uses a bare tqdm that disable_progress_bar() misses (issue 13)."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from blindspot.logsetup import gguf_bar_hidden

    original = gguf_utils.tqdm
    # the hub's switch, as route_libraries leaves it (bars off) and as -v leaves it (on); patched,
    # because once HF_HUB_DISABLE_PROGRESS_BARS is set in the environment the hub refuses to turn bars on
    monkeypatch.setattr(huggingface_hub.utils, "are_progress_bars_disabled", lambda: True)
    with gguf_bar_hidden():
        list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert "Converting" not in capsys.readouterr().err
    assert gguf_utils.tqdm is original
    monkeypatch.setattr(huggingface_hub.utils, "are_progress_bars_disabled", lambda: False)
    with gguf_bar_hidden():
        assert gguf_utils.tqdm is original  # -v: the library's own bar stays


def test_an_info_record_marked_for_the_screen_shows_unless_quiet(capsys):
    """A stage resuming from a checkpoint is an INFO line a person must see without -v."""
    import logging

    from blindspot.logsetup import NORMAL, QUIET, SCREEN, configure

    log = logging.getLogger("blindspot.test_screen")
    try:
        configure(NORMAL)
        log.info("plain info line")
        log.info("resuming from checkpoint step-50", extra=SCREEN)
        err = capsys.readouterr().err
        assert "resuming from checkpoint step-50" in err and "plain info line" not in err
        configure(QUIET)
        log.info("resuming again", extra=SCREEN)
        assert "resuming again" not in capsys.readouterr().err
    finally:
        configure(NORMAL)
