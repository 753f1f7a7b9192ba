"""The run's display, the progress sink, the screen/log routing and -v/-q (no model, no data)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from blindspot import cli
from blindspot.grid.artifacts import StageSpec
from blindspot.grid.display import RunDisplay, StageBar, WorkEstimate, duration
from blindspot.logsetup import NORMAL, QUIET, VERBOSE, configure, log_to_file
from blindspot.progress import progress_bar, track, use_sink
from blindspot.grid.summary import key_pair


def test_duration_text() -> None:
    assert [duration(s) for s in (4.4, 59.6, 192, 3840)] == ["4s", "1m00s", "3m12s", "1h04m"]


def test_estimate_is_overhead_plus_work_at_the_measured_rate() -> None:
    est = WorkEstimate()
    assert est.seconds("augment", "train", 100) is None  # nothing timed yet
    est.record("augment", "train", wall_s=12.0, loop_s=10.0, examples=50)  # 5 ex/s, 2 s overhead
    assert est.seconds("augment", "train", 100) == pytest.approx(2 + 100 / 5)
    assert est.seconds("augment", "train", 0) == pytest.approx(2)
    assert est.seconds("start", "train", 10) == pytest.approx(2 + 10 / 5)  # borrows the train rate
    assert est.seconds("evaluate", "predict", 10) is None  # no predict stage timed
    assert est.seconds("augment", "train", None) is None  # work not known yet
    est.record("start", "train", wall_s=3.0, loop_s=0.0, examples=0)  # n=0: overhead only
    assert est.seconds("start", "train", 40) == pytest.approx(3 + 40 / 5)  # its overhead, the kind-wide rate


def _stages(tmp_path: Path) -> list[StageSpec]:
    return [StageSpec("augment", {"i": i}, label=f"augment {i}") for i in range(3)]


def test_display_is_the_sink_and_prints_one_line_per_stage(tmp_path: Path, capsys) -> None:
    stages = _stages(tmp_path)
    shown = RunDisplay(stages, 0, lambda st: ("train", 4), "plain", tmp_path)
    with shown.running(), use_sink(shown):
        for st in stages:
            shown.started(st)
            bar = progress_bar(4, "train", unit="ex")
            assert isinstance(bar, StageBar)
            for _ in track(range(2), "inner"):
                pass
            bar.update(4)
            bar.close()
            shown.done(st, 0.5, tmp_path)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == "" and len(lines) == 3
    assert lines[0].startswith("[1/3] augment 0") and "train ex/s" in lines[0] and "(ETA" in lines[0]
    assert "ETA" not in lines[2]
    assert shown.estimate.kinds["augment"].stages == 3 and shown.estimate.kinds["augment"].examples == 3 * 6


def test_failed_and_skipped_stages_are_counted(tmp_path: Path, capsys) -> None:
    stages = _stages(tmp_path)
    shown = RunDisplay(stages, 0, lambda st: ("train", 4), "off", tmp_path)
    shown.failed_stage(stages[0], "too few pairs")
    shown.failed_stage(stages[1], "needs augment 0, which failed", skipped=True)
    assert capsys.readouterr().out == ""  # mode off
    assert shown.failed == 2 and shown.eta() == (0.0, 1)


def test_progress_defaults_to_tqdm(capsys) -> None:
    bar = progress_bar(3, "standalone", unit="ex")
    bar.update(3)
    bar.close()
    assert "standalone" in capsys.readouterr().err


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


@pytest.mark.parametrize("verbosity, shown", [
    (QUIET, {"ours error", "lib error"}),
    (NORMAL, {"ours warning", "ours error", "lib error"}),
    (VERBOSE, {"ours debug", "ours info", "ours warning", "ours error", "lib info", "lib warning", "lib error"}),
])
def test_screen_shows_our_lines_and_library_lines_only_with_verbose(verbosity, shown, restore_logging,
                                                                     capsys) -> None:
    configure(verbosity)
    capsys.readouterr()
    for who, logger in (("ours", logging.getLogger("blindspot.test")), ("lib", logging.getLogger("transformers.x"))):
        for level in ("debug", "info", "warning", "error"):
            getattr(logger, level)(f"{who} {level}")
    err = capsys.readouterr().err
    assert {m for m in ("ours debug", "ours info", "ours warning", "ours error", "lib debug", "lib info",
                        "lib warning", "lib error") if m in err} == shown


def test_log_file_gets_everything_including_libraries_and_warnings(tmp_path: Path, restore_logging,
                                                                    capsys) -> None:
    import warnings

    configure(NORMAL)
    with log_to_file(tmp_path / "run.log"):
        logging.getLogger("blindspot.test").debug("our debug line")
        logging.getLogger("transformers.modeling_utils").warning("a LOAD REPORT banner")
        warnings.warn("a library warning", UserWarning)
    text = (tmp_path / "run.log").read_text()
    assert "our debug line" in text and "a LOAD REPORT banner" in text and "a library warning" in text
    assert "LOAD REPORT" not in capsys.readouterr().err
    assert not any(getattr(h, "baseFilename", None) == str(tmp_path / "run.log") for h in logging.getLogger().handlers)


def test_verbosity_flags_work_before_and_after_the_subcommand(monkeypatch, tmp_path: Path) -> None:
    seen: list[int] = []
    monkeypatch.setattr(cli, "setup_logging", seen.append)
    missing = str(tmp_path / "missing.yaml")
    for argv in (["run", missing, "-q"], ["-q", "run", missing], ["run", missing, "-v"], ["-v", "run", missing],
                 ["run", missing]):
        assert cli.main(argv) == 2  # the config does not exist: one error line, after logging is set up
    assert seen == [QUIET, QUIET, VERBOSE, VERBOSE, NORMAL]


def test_log_option_of_any_subcommand_gets_our_info_lines(tmp_path: Path, restore_logging, capsys) -> None:
    data = tmp_path / "multinli_1.0_dev_matched.jsonl"
    data.write_text('{"gold_label": "entailment", "sentence1": "A man runs .", "sentence2": "A man moves .", '
                    '"pairID": "1", "genre": "fiction"}\n')
    assert cli.main(["data", "describe", str(data), "--log", str(tmp_path / "describe.log")]) == 0
    out, err = capsys.readouterr()
    assert "entailment" in out and err == ""  # the command's own output; no INFO lines on screen
    assert "INFO blindspot.data" in (tmp_path / "describe.log").read_text()


def test_the_paired_test_that_matters() -> None:
    assert key_pair(["original", "synthetic", "biased-lexical-overlap"]) == ("biased-lexical-overlap", "original")
    assert key_pair(["original", "synthetic"]) == ("synthetic", "original")
    assert key_pair(["synthetic"]) is None


def test_strict_warnings_records_a_library_deprecation_raised_under_our_frames(capsys) -> None:
    """The runner the smoke test uses catches what `-W error::FutureWarning:blindspot` misses: a
    library's warning attributed (stacklevel) to a frame outside our package."""
    import importlib.util
    import warnings

    spec = importlib.util.spec_from_file_location("strict_warnings", Path(__file__).parent / "strict_warnings.py")
    strict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(strict)

    def library_items():
        warnings.warn("old API, use the new one", FutureWarning, stacklevel=3)  # blames a caller further up
        yield 1

    with warnings.catch_warnings():
        warnings.showwarning = lambda *args, **kwargs: None  # what the hook passes them on to: nothing
        strict._install_hook()
        list(library_items())  # not under our code: not recorded
        assert strict.RECORDED == []
        list(track(library_items(), "x", disable=True))  # advanced inside blindspot.progress.track
    assert [r["message"] for r in strict.RECORDED] == ["old API, use the new one"]
    assert strict.RECORDED[0]["our_frames"][0].startswith("blindspot.progress:")
    assert "/blindspot/" not in strict.RECORDED[0]["where"]  # a module="blindspot" filter would not match
