"""The report's samples to browse: hostile generated text renders inert, samples are seeded, collapsed."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from blindspot import heuristics
from blindspot.data.example import MNLI_LABELS, to_two_way
from blindspot.filters import run_filter
from blindspot.report import write_report
from blindspot.report_samples import (PER_LABEL, REJECTS, _SHOWN_AS_ESCAPE, find_stages, interleave, reservoirs,
                                      sample_blocks, text_html)
from test_results import make_run_dir

# what a generator might write that must not become markup, a request, or a broken page
HOSTILE = [
    "<script>window.__pwned = 1; document.title = 'pwned'</script>",
    '"><img src=x onerror="window.__pwned=2">',
    "</td></tr></table></details><svg onload=\"window.__pwned=3\">",
    "<img src='http://198.51.100.7/beacon.png'> <link rel=stylesheet href='http://198.51.100.7/x.css'>",
    "<style>body{display:none}</style><!-- unclosed comment",
    "<a href=\"javascript:window.__pwned=4\">click</a> &amp; &lt;entity&gt;",
    "esc\x1b[31mred\x1b[0m nul\x00 bell\x07 cr\r del\x7f c1\x85 bidi\u202eevil\u202c zw\u200b bom\ufeff ls\u2028",
    "lone \ud800 surrogate and \udfff another",
    "word" * 1500,  # a 6,000-character line without a space
    "x" * 200 + " " + "y " * 3000,
]
# generation decodes tokens to valid text, so lone surrogates reach only hand-made files: not the pairs
# that the real filter reads and writes (UTF-8), but the rejects file, which this module reads itself
PAIR_HOSTILE = [t for t in HOSTILE if "\ud800" not in t]
TAGS_OURS = {"div", "h3", "details", "summary", "p", "table", "thead", "tbody", "tr", "th", "td", "span"}


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")  # ASCII: "\ud800" stays


def _stage(store: Path, name: str, kind: str, spec: dict, inputs: dict, done: bool = True) -> Path:
    d = store / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "stage.json").write_text(json.dumps({"stage": kind, "spec": spec, "inputs": inputs}))
    if done:
        (d / "DONE").write_text("")
    return d


def _pairs(round_: int, n_per_label: int) -> list[dict]:
    """Per label: plain pairs (some with full overlap), then every hostile text as premise and hypothesis."""
    rows = []
    for label in MNLI_LABELS:
        for i in range(n_per_label):
            premise = f"the cat {i} sat on the mat"
            hypothesis = f"the cat {i} sat" if i % 2 else f"a dog {i} ran"
            rows.append({"id": f"r{round_}-{label}-{i}", "premise": premise, "hypothesis": hypothesis, "label": label})
        for i, text in enumerate(PAIR_HOSTILE):
            rows.append({"id": f"r{round_}-{label}-h{i}", "premise": text, "hypothesis": PAIR_HOSTILE[-1 - i],
                         "label": label})
    return rows


def add_synthetic_stages(run_dir: Path, rounds: int = 2, n_per_label: int = 30) -> None:
    """Generator, generate and filter stage directories as the grid writes them, one set per round
    (round 1 without a `round` field, as the planner writes it), the last generate unfinished; and a
    filter of the original pool. The filters are the real ones (blindspot.filters.run_filter)."""
    store = run_dir / "stages"
    reasons = ["no_marker", "too_long", "bad_characters", "duplicate", "extra_text"]
    for r in range(1, rounds + 1):
        rnd = {} if r == 1 else {"round": r, "mode": "replace"}
        # a later round's generator names the set it trains on (the previous round's) as an input
        trained = {} if r == 1 else {"round": {"round": r, "mode": "replace", "train_size": 90, "real_fraction": 0.0}}
        _stage(store, f"generator-{r:012d}", "generator", {"model": "tiny-llama", **trained},
               {} if r == 1 else {"synthetic-r{}".format(r - 1): f"generate-{r - 1:012d}"})
        gen = _stage(store, f"generate-{r:012d}", "generate", {"generation": {"per_label": n_per_label}, **rnd},
                     {"generator": f"generator-{r:012d}", "prepare": "prepare-0"})
        _write(gen / "synthetic.jsonl", _pairs(r, n_per_label))
        rejects = [{"label": MNLI_LABELS[i % 3], "batch": i // 8, "row": i % 8, "seed": 7, "reason": reasons[i % 5],
                    "text": HOSTILE[i % len(HOSTILE)]} for i in range(60)]
        _write(gen / "rejects.jsonl", rejects + [{"label": "neutral", "reason": "wrong_order", "text": "only once"}])
        filt = store / f"filter-{r:012d}"
        run_filter(str(gen / "synthetic.jsonl"), "biased-lexical-overlap", filt, keep_dropped=True)
        _stage(store, filt.name, "filter", {"filter": "biased-lexical-overlap", "overlap_rule": "paper"},
               {"data": gen.name})
    (store / f"generate-{rounds:012d}" / "DONE").unlink()  # e.g. too few valid examples: still browsable
    pool = store / "prepare-0"
    _write(pool / "pool.jsonl", _pairs(0, 12))
    filt = store / "filter-pool"
    run_filter(str(pool / "pool.jsonl"), "biased-lexical-overlap", filt, keep_dropped=True, overlap_rule="words")
    _stage(store, filt.name, "filter", {"filter": "biased-lexical-overlap", "input": "pool", "overlap_rule": "words"},
           {"data": "prepare-0"})


def make_browse_run(root: Path) -> Path:
    """A run directory with results (test_results' fixture) and synthetic data of two rounds, reported."""
    run_dir = make_run_dir(root)
    add_synthetic_stages(run_dir)
    write_report(run_dir)
    return run_dir


class Tags(HTMLParser):
    """Every start tag (name, attributes) of a page, and where the samples' div starts and ends."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict, bool]] = []  # (tag, attrs, inside the samples div)
        self.depth = 0  # div depth inside the samples, 0 = outside
        self.text_in_samples: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and (self.depth or attrs.get("class") == "samples"):
            self.depth += 1
        self.tags.append((tag, attrs, self.depth > 0))

    def handle_endtag(self, tag):
        if tag == "div" and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.text_in_samples.append(data)


@pytest.fixture(scope="module")
def browse_run(tmp_path_factory) -> Path:
    return make_browse_run(tmp_path_factory.mktemp("browse") / "run")


def test_text_html_is_inert_text() -> None:
    for text in HOSTILE:
        out = text_html(text, 300)
        assert re.sub(r'<span class="(ctl|cut)">|</span>', "", out).count("<") == 0
        assert '"' not in re.sub(r'<span class="(ctl|cut)">', "", out) and "'" not in out
        assert not _SHOWN_AS_ESCAPE.search(out)
        out.encode("utf-8")  # no lone surrogate left
    out = text_html(HOSTILE[6])
    for shown in ("\\x1b", "\\x00", "\\x07", "\\x0d", "\\x7f", "\\x85", "\\u202e", "\\u200b", "\\ufeff", "\\u2028"):
        assert f'<span class="ctl">{shown}</span>' in out
    assert text_html("lone \ud800 x") == 'lone <span class="ctl">\\ud800</span> x'
    long = text_html("word" * 1500, 500)
    assert long.startswith("word" * 125) and long.endswith('<span class="cut"> [... 5,500 more characters cut]</span>')
    assert text_html("tab\tand\nnewline") == "tab\tand\nnewline"  # shown by the cells' pre-wrap
    assert text_html(None) == "null" and text_html(3) == "3"


def test_reservoirs_are_seeded_uniform_and_bounded() -> None:
    rows = [{"k": "a" if i % 4 else "b", "i": i} for i in range(1000)]
    one, counts = reservoirs(iter(rows), lambda r: r["k"], 20, "seed")
    assert one == reservoirs(iter(rows), lambda r: r["k"], 20, "seed")[0]
    assert one != reservoirs(iter(rows), lambda r: r["k"], 20, "other")[0]
    assert counts == {"a": 750, "b": 250} and {g: len(v) for g, v in one.items()} == {"a": 20, "b": 20}
    assert all(r["k"] == g for g, v in one.items() for r in v) and max(r["i"] for r in one["a"]) > 500
    mixed = interleave(one, counts, 5)
    assert [r["k"] for r in mixed] == ["a", "b", "a", "b", "a"]
    # the first few of a group are a random draw, not the earliest rows of the sample
    first = [r["i"] for r in one["a"][:5]]
    assert sorted(first) != sorted(r["i"] for r in one["a"])[:5]


def test_finds_generate_stages_by_round_with_their_filters(browse_run: Path) -> None:
    generates, pool = find_stages(browse_run)
    assert [(g.path.name, g.round, g.done) for g in generates] == [
        ("generate-000000000001", 1, True), ("generate-000000000002", 2, False)]
    assert [[f.path.name for f in g.filters] for g in generates] == [["filter-000000000001"], ["filter-000000000002"]]
    assert [f.path.name for f in pool] == ["filter-pool"]
    assert sample_blocks(make_run_dir(browse_run.parent / "no-synthetic")) == []  # nothing to browse: no section


def test_hostile_text_renders_inert(browse_run: Path) -> None:
    page = (browse_run / "report" / "report.html").read_text(encoding="utf-8")
    parser = Tags()
    parser.feed(page)
    assert parser.depth == 0  # every div the samples opened is closed: no text broke out of a cell
    inside = [(t, a) for t, a, s in parser.tags if s]
    assert {t for t, _ in inside} == TAGS_OURS
    assert all(set(a) <= {"class"} for _, a in inside)
    assert not [t for t, _, _ in parser.tags if t in ("script", "svg", "link", "a", "iframe", "object")]
    assert [t for t, _, _ in parser.tags].count("style") == 1
    assert not [k for _, a, _ in parser.tags for k in a if k.lower().startswith("on")]
    text = "".join(parser.text_in_samples)
    assert HOSTILE[0] in text and HOSTILE[3] in text  # shown as text, readable
    assert "\x1b" not in page and "\x00" not in page and "\u202e" not in page
    assert "[... 5,500 more characters cut]" in text
    assert "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:;" in page


def test_sections_collapsed_and_complete(browse_run: Path) -> None:
    page = (browse_run / "report" / "report.html").read_text(encoding="utf-8")
    parser = Tags()
    parser.feed(page)
    details = [a for t, a, _ in parser.tags if t == "details"]
    assert len(details) == 2 * 3 + 1 and not any("open" in a for a in details)  # per round: 3; the pool: 1
    text = "".join(parser.text_in_samples)
    assert "Synthetic data, round 1 (training data for round 2): generator tiny-llama, stage generate-000000000001" \
        in text
    assert "round 2 replace: generator tiny-llama, stage generate-000000000002 (not finished)" in text
    n_label = 30 + len(PAIR_HOSTILE)
    assert text.count(f"{PER_LABEL} of {n_label}") == 2 * len(MNLI_LABELS)
    assert f"Rejected generations: {REJECTS} (of 61 rejected)" in text
    assert "wrong_order" in text  # a reason seen once still shows: reasons are shown in turn
    md = (browse_run / "report" / "report.md").read_text(encoding="utf-8")
    assert "round 2 replace: generator tiny-llama" in md and "<script>" not in md


def test_a_section_title_names_the_round_its_mode_and_what_the_data_is_for(tmp_path: Path) -> None:
    from blindspot.report_samples import Stage, _title

    _stage(tmp_path, "generator-a", "generator", {"model": "tiny-llama-wide"}, {})
    def title(spec: dict, trains: list[int], rounds: bool = True) -> str:
        stage = Stage(tmp_path / "generate-b", "generate", spec, {"generator": "generator-a"}, True, trains=trains)
        return _title(stage, rounds)

    assert title({}, [], rounds=False) == "Synthetic data: generator tiny-llama-wide, stage generate-b"
    assert title({}, []).startswith("Synthetic data, round 1: generator tiny-llama-wide")
    assert title({"round": 2, "mode": "accumulate"}, []).startswith("Synthetic data, round 2 accumulate: generator")
    assert title({"round": 2, "mode": "replace"}, [3]).startswith(
        "Synthetic data, round 2 replace (training data for round 3): generator tiny-llama-wide")
    # round 1's data for round 2 trains round 2 (both modes) and, in accumulate, round 3
    assert title({}, [2, 3]).startswith("Synthetic data, round 1 (training data for rounds 2 and 3): ")


def test_filter_rows_show_the_feature_that_decided(browse_run: Path) -> None:
    page = (browse_run / "report" / "report.html").read_text(encoding="utf-8")
    section = page.split("Filter biased-lexical-overlap:")[1].split("</details>")[0]
    for part in ("kept", "dropped"):
        rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(yes|no)</td><td>(.*?)</td>"
                          r"<td>(right|wrong)</td></tr>", section.split(f"<p>{part}:")[1].split("</table>")[0])
        assert len(rows) == 10
        for premise, hypothesis, label, has, missing, right in rows:
            if "span" in premise + hypothesis:
                continue  # cut or escaped text: not the pair itself
            p, hy = html.unescape(premise), html.unescape(hypothesis)
            assert (has == "yes") == heuristics.lexical_overlap(p, hy, "paper")
            assert (right == "right") == ((has == "yes") == (to_two_way(label.split(" ")[0]) == "entailment"))
            assert right == ("right" if part == "kept" else "wrong")  # biased: kept exactly where it is right
            assert (missing == "(none)") == (has == "yes")


def test_rerender_is_identical(browse_run: Path, tmp_path: Path) -> None:
    again = write_report(browse_run, tmp_path / "again")
    assert (again / "report.html").read_bytes() == (browse_run / "report" / "report.html").read_bytes()
