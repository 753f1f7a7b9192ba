"""Samples of a run's synthetic data to browse in the HTML report, collapsed by default.

    blindspot report RUN_DIR        # report.html's section "Browse the synthetic data"

Per generate stage (a synthetic source; one per round when the stage's spec has a `round`, which
round 1 has not): about PER_LABEL random accepted pairs per label (synthetic.jsonl), REJECTS
rejected generations with their reasons (rejects.jsonl, every reason shown where there are
enough), and for each filter of that data FILTER_SHOWN kept and FILTER_SHOWN dropped pairs with
the feature that decided it, recomputed under the filter's overlap rule. Filters of the original
pool (sources `original+FILTER`) get a section of their own. A generate stage that did not finish
(too few valid examples) is shown too: its rejects say why.

Reads only stage directories: those RUN_DIR/results/timings.json names, else RUN_DIR/stages/*.
Files are streamed and sampled with a reservoir whose generator is seeded by the stage directory
and the part, so a re-render is identical and memory stays bounded.

Generated text is hostile input. Every value is shown as text: cut at a length with a visible
note, control, bidirectional, zero-width and lone-surrogate characters written as visible
escapes (\\x1b, \\u202e), then HTML-escaped (quotes too); cells wrap long lines. Nothing from a
stage directory becomes markup, an attribute or a URL.
"""

from __future__ import annotations

import html
import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

PER_LABEL = 20  # accepted pairs shown per label
REJECTS = 20  # rejected generations shown
FILTER_SHOWN = 10  # kept (and as many dropped) pairs shown per filter
MAX_PAIR_CHARS = 500  # a premise or hypothesis longer than this is cut (visibly)
MAX_REJECT_CHARS = 800  # the raw text of a rejected generation
# C0/C1 controls but tab and newline; zero-width and bidirectional controls; line and paragraph
# separators; BOM; lone surrogates (json.loads makes them from "\ud800"; UTF-8 cannot encode them)
_SHOWN_AS_ESCAPE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
                              "\ud800-\udfff]")

STYLE = (".samples table{table-layout:auto;max-width:100%}"
         ".samples td{white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;vertical-align:top;"
         "max-width:38em}.samples .ctl{color:#a00;background:#fee;font-family:monospace}"
         ".samples .cut{color:#a00;font-style:italic}details{margin:0.3em 0 0.3em 1em}"
         "summary{cursor:pointer}.samples h3{margin-top:1.2em}")


def text_html(value: object, limit: int = MAX_PAIR_CHARS) -> str:
    """`value` as inert HTML text: cut at `limit` characters (said so), odd characters as escapes."""
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    cut = len(s) - limit
    s = s[:limit] if cut > 0 else s
    out, pos = [], 0
    for m in _SHOWN_AS_ESCAPE.finditer(s):
        o = ord(m.group())
        code = f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"
        out.append(html.escape(s[pos:m.start()]))
        out.append(f'<span class="ctl">{code}</span>')
        pos = m.end()
    out.append(html.escape(s[pos:]))
    if cut > 0:
        out.append(f'<span class="cut"> [... {cut:,} more characters cut]</span>')
    return "".join(out)


def table_html(columns: list[str], rows: list[list[str]]) -> str:
    """A table whose cells are already HTML (from text_html); column names are ours."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def details_html(summary: str, inner: str) -> str:
    """A collapsed section (no `open`): the summary is our text, the inner HTML built by this module."""
    return f"<details><summary>{html.escape(summary)}</summary>{inner}</details>"


# ---------------------------------------------------------------- reading stage directories


@dataclass
class Stage:
    """A stage directory: its kind, spec, inputs (name -> directory name) and whether it finished."""

    path: Path
    kind: str
    spec: dict
    inputs: dict[str, str]
    done: bool
    filters: list["Stage"] = field(default_factory=list)
    trains: list[int] = field(default_factory=list)  # rounds whose generators learn from this set

    @property
    def round(self) -> int:
        return int(self.spec.get("round") or 1)


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _stage_dirs(run_dir: Path) -> list[Path]:
    """The run's stage directories: those timings.json names, else the store in the run directory."""
    try:
        timings = json.loads((run_dir / "results" / "timings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        timings = None
    if isinstance(timings, list):
        named = [run_dir / t["dir"] for t in timings if isinstance(t, dict) and isinstance(t.get("dir"), str)]
        if named:
            return [d for d in named if d.is_dir()]
    return sorted(d for d in (run_dir / "stages").glob("*") if d.is_dir())


def find_stages(run_dir: str | Path) -> tuple[list[Stage], list[Stage]]:
    """(generate stages by round, each with its filters; filters of the original pool)."""
    by_name: dict[str, Stage] = {}
    for d in _stage_dirs(Path(run_dir)):
        meta = _read_json(d / "stage.json")
        if meta.get("stage") in ("generate", "filter", "generator"):
            by_name[d.name] = Stage(d, meta["stage"], meta.get("spec") or {}, meta.get("inputs") or {},
                                    (d / "DONE").exists())
    generates = [s for s in by_name.values() if s.kind == "generate" and (s.path / "synthetic.jsonl").exists()]
    pool_filters = []
    for s in by_name.values():
        if s.kind != "filter" or not s.done:
            continue
        parent = by_name.get(s.inputs.get("data", ""))
        (parent.filters if parent is not None and parent.kind == "generate" else pool_filters).append(s)
    for s in by_name.values():  # a later round's generator names the sets it trains on as synthetic-rT inputs
        r = s.spec.get("round")
        if s.kind == "generator" and isinstance(r, dict):
            for key, name in s.inputs.items():
                if key.startswith("synthetic-r") and name in by_name and r.get("round") not in by_name[name].trains:
                    by_name[name].trains.append(r.get("round"))
    for s in generates:
        s.filters.sort(key=lambda f: f.spec.get("filter", ""))
        s.trains.sort()
    generates.sort(key=lambda s: (s.round, s.path.name))
    return generates, sorted(pool_filters, key=lambda f: f.spec.get("filter", ""))


def _rows(path: Path) -> Iterator[dict]:
    """JSON objects of a JSONL file, skipping lines that are not one (a torn last line)."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


def reservoirs(rows: Iterator[dict], key, k: int, seed: str) -> tuple[dict[str, list[dict]], Counter]:
    """Up to `k` rows per key(row), uniformly at random (seeded), in random order, and the counts per key.

    The order is random too, so that taking the first few of a group (interleave) is a random draw,
    not the rows that came first in the file (for a generate stage: the first label generated)."""
    rng, kept, counts = random.Random(seed), {}, Counter()
    for row in rows:
        group = str(key(row))
        i = counts[group]
        counts[group] += 1
        bucket = kept.setdefault(group, [])
        if i < k:
            bucket.append((i, row))
        else:
            j = rng.randrange(i + 1)
            if j < k:
                bucket[j] = (i, row)
    for bucket in kept.values():
        rng.shuffle(bucket)
    return {g: [r for _, r in b] for g, b in kept.items()}, counts


def interleave(groups: dict[str, list[dict]], counts: Counter, n: int) -> list[dict]:
    """Up to `n` rows taken in turn from each group, the most common group first."""
    order = sorted(groups, key=lambda g: (-counts[g], g))
    out, i = [], 0
    while len(out) < n and any(i < len(groups[g]) for g in order):
        out += [groups[g][i] for g in order if i < len(groups[g])][:n - len(out)]
        i += 1
    return out


# ---------------------------------------------------------------- the sections


def _model_of(stage: Stage) -> str:
    """The generator's model, from the generate stage's `generator` input, or '?'."""
    gen = _read_json(stage.path.parent / stage.inputs.get("generator", "") / "stage.json")
    model = (gen.get("spec") or {}).get("model")
    return model if isinstance(model, str) else "?"


def accepted_section(stage: Stage) -> tuple[str, Counter]:
    """PER_LABEL random accepted pairs per label, one table per label."""
    groups, counts = reservoirs(_rows(stage.path / "synthetic.jsonl"), lambda r: r.get("label"), PER_LABEL,
                                f"{stage.path.name}:accepted")
    parts = []
    for label in sorted(groups):
        rows = [[text_html(r.get("id"), 80), text_html(r.get("premise")), text_html(r.get("hypothesis"))]
                for r in groups[label]]
        parts.append(f"<p>{text_html(label, 80)}: {len(rows)} of {counts[label]:,}</p>"
                     + table_html(["id", "premise", "hypothesis"], rows))
    summary = (f"Accepted pairs: {min(PER_LABEL, max(counts.values(), default=0))} random per label "
               f"(of {sum(counts.values()):,} accepted)")
    return details_html(summary, "".join(parts) or "<p>none</p>"), counts


def rejects_section(stage: Stage) -> tuple[str, Counter]:
    """REJECTS rejected generations, every reason in turn (shown by reason), with the counts per reason."""
    groups, counts = reservoirs(_rows(stage.path / "rejects.jsonl"), lambda r: r.get("reason"), REJECTS,
                                f"{stage.path.name}:rejects")
    rank = {r: i for i, (r, _) in enumerate(counts.most_common())}
    shown = sorted(interleave(groups, counts, REJECTS), key=lambda r: rank[str(r.get("reason"))])  # by reason
    reasons = ", ".join(f"{text_html(r, 80)} {n:,}" for r, n in counts.most_common())
    rows = [[text_html(r.get("reason"), 80), text_html(r.get("label"), 80), text_html(r.get("text"), MAX_REJECT_CHARS)]
            for r in shown]
    inner = (f"<p>Rejected by reason: {reasons or 'none'}. The text is what the generator wrote after its "
             "prompt; reasons are blindspot.generation.parsing's.</p>" + table_html(["reason", "label", "generated text"], rows))
    return details_html(f"Rejected generations: {len(shown)} (of {sum(counts.values()):,} rejected)", inner), counts


def _decision(row: dict, feature: str, rule: str) -> list[str]:
    """The cells that explain a filter's choice: gold label, the feature, tokens missing, heuristic."""
    from blindspot import filters, heuristics
    from blindspot.data.example import to_two_way
    from blindspot.errors import BlindspotError

    premise, hypothesis = str(row.get("premise", "")), str(row.get("hypothesis", ""))
    label = str(row.get("label", ""))
    try:
        has = filters.FEATURES[feature](premise, hypothesis, rule)
        in_premise = set(heuristics.tokens(premise, rule))
        missing = [t for t in dict.fromkeys(heuristics.tokens(hypothesis, rule)) if t not in in_premise]
    except (KeyError, BlindspotError) as e:  # a feature or rule this version lacks: say so, keep the report
        return [text_html(label, 80), text_html(f"cannot compute: {e}", 200), "", ""]
    right = None if has is None else has == (to_two_way(label) == "entailment")
    two_way = to_two_way(label)
    return [text_html(label if two_way == label else f"{label} ({two_way})", 80),
            "unknown" if has is None else ("yes" if has else "no"),
            text_html(" ".join(missing) if missing else "(none)", 200),
            "?" if right is None else ("right" if right else "wrong")]


def filter_section(stage: Stage) -> str:
    """FILTER_SHOWN kept and dropped pairs of a filter, each with the feature that decided it."""
    report = _read_json(stage.path / "report.json")
    name, feature = str(report.get("filter") or stage.spec.get("filter")), str(report.get("feature", "?"))
    rule = str(report.get("overlap_rule") or stage.spec.get("overlap_rule") or "paper")
    columns = ["premise", "hypothesis", "gold label", feature, "hypothesis tokens not in the premise",
               f"heuristic '{feature} => entailment'"]
    parts, totals = [], {}
    for part in ("kept", "dropped"):
        groups, counts = reservoirs(_rows(stage.path / f"{part}.jsonl"), lambda r: r.get("label"), FILTER_SHOWN,
                                    f"{stage.path.name}:{part}")
        totals[part] = sum(counts.values())
        shown = interleave(groups, counts, FILTER_SHOWN)
        rows = [[text_html(r.get("premise")), text_html(r.get("hypothesis")), *_decision(r, feature, rule)]
                for r in shown]
        missing = "" if (stage.path / f"{part}.jsonl").exists() else f" ({part}.jsonl was not kept)"
        parts.append(f"<p>{part}: {len(rows)} of {totals[part]:,}{missing}</p>" + table_html(columns, rows))
    intro = (f"<p>{text_html(report.get('rule', ''), 400)}. Overlap rule: {text_html(rule, 40)}. Feature values "
             "recomputed here from the pair under that rule.</p>")
    return details_html(f"Filter {name}: {totals['kept']:,} kept, {totals['dropped']:,} dropped "
                        f"(showing up to {FILTER_SHOWN} of each)", intro + "".join(parts))


def _title(stage: Stage, rounds: bool) -> str:
    """'Synthetic data, round 2 accumulate (training data for round 3): generator M, stage D'."""
    done = "" if stage.done else " (not finished)"
    which = ""
    if rounds:
        mode = stage.spec.get("mode")
        which = f", round {stage.round}" + (f" {mode}" if isinstance(mode, str) else "")
        if stage.trains:
            rounds_ = " and ".join(map(str, stage.trains))
            which += f" (training data for round{'s' if len(stage.trains) > 1 else ''} {rounds_})"
    return f"Synthetic data{which}: generator {_model_of(stage)}, stage {stage.path.name}{done}"


def sample_blocks(run_dir: str | Path) -> list[tuple]:
    """Report blocks: a heading, a note, and the samples as HTML (with a Markdown line per source)."""
    generates, pool_filters = find_stages(run_dir)
    if not generates and not pool_filters:
        return []
    rounds = any("round" in s.spec for s in generates)
    body, md = [], []
    for s in generates:
        title = _title(s, rounds)
        accepted, n_ok = accepted_section(s)
        rejected, n_bad = rejects_section(s)
        body.append(f"<h3>{html.escape(title)}</h3>" + accepted + rejected + "".join(map(filter_section, s.filters)))
        md.append(f"- {title}: {sum(n_ok.values()):,} accepted, {sum(n_bad.values()):,} rejected; filters: "
                  + (", ".join(f.spec.get("filter", "?") for f in s.filters) or "none"))
    if pool_filters:
        body.append("<h3>The original pool through a filter</h3>" + "".join(map(filter_section, pool_filters)))
        md.append("- the original pool through " + ", ".join(f.spec.get("filter", "?") for f in pool_filters))
    note = ("Samples of the data each synthetic source trained on, collapsed: click a line to open it. Drawn at "
            "random with a seed fixed per stage, so a re-render shows the same ones. Generated text is shown as "
            "text: control and invisible characters as escapes in red, long texts cut where marked.")
    return [("h2", "Browse the synthetic data"), ("p", note),
            ("html", '<div class="samples">' + "".join(body) + "</div>",
             "Samples of each source are in report.html:\n" + "\n".join(md))]
