"""Public NLI sets in their published shapes (SNLI, ANLI, SICK, HF exports), format recognition, source options.

    python -m pytest -q tests/test_data_formats.py

Fixtures are a few rows written in each set's real field names and label codings; each must
load with at most a column and label map (SNLI, with MNLI's fields, with none at all).
"""

from __future__ import annotations

import json

import pytest

from blindspot.cli import main
from blindspot.data import DataSource, load_source
from blindspot.data.source_args import default_set_name, parse_named_source, parse_source_text, source_text
from blindspot.errors import ConfigError, DataError

PAIRS = [("A man plays a guitar on stage.", "A man plays music."),
         ("A man plays a guitar on stage.", "The man is famous."),
         ("A man plays a guitar on stage.", "The man is asleep in bed.")]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def snli_rows():
    """SNLI 1.0 JSONL: annotator_labels, captionID, gold_label ('-' without a majority), pairID, parses."""
    rows = [{"annotator_labels": [lab] * 5, "captionID": f"31{i}.jpg#0", "gold_label": lab, "pairID": f"31{i}.jpg#0r1{lab[0]}",
             "sentence1": p, "sentence1_binary_parse": "( x )", "sentence1_parse": "(ROOT x)",
             "sentence2": h, "sentence2_binary_parse": "( y )", "sentence2_parse": "(ROOT y)"}
            for i, ((p, h), lab) in enumerate(zip(PAIRS, ("entailment", "neutral", "contradiction")))]
    return rows + [{**rows[0], "pairID": "x", "gold_label": "-", "annotator_labels": ["neutral", "entailment"]}]


def test_snli_jsonl_is_recognised_with_no_map(tmp_path):
    s = load_source(str(_jsonl(tmp_path / "snli_1.0_dev.jsonl", snli_rows())))
    assert s.name == "snli_1.0_dev" and s.meta["format"] == "mnli"
    assert [(e.id, e.label) for e in s] == [("310.jpg#0r1e", "entailment"), ("311.jpg#0r1n", "neutral"),
                                            ("312.jpg#0r1c", "contradiction")]
    assert s.meta["dropped_no_gold"] == 1 and s.examples[0].premise == PAIRS[0][0]


def test_snli_txt_is_recognised_with_no_map(tmp_path):
    head = ["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
            "sentence1", "sentence2", "captionID", "pairID", "label1", "label2", "label3", "label4", "label5"]
    lines = ["\t".join(head)] + ["\t".join([lab, "( x )", "( y )", "(ROOT x)", "(ROOT y)", p, h, f"c{i}", f"p{i}",
                                            lab, lab, lab, lab, lab])
                                 for i, ((p, h), lab) in enumerate(zip(PAIRS, ("entailment", "neutral", "-")))]
    p = tmp_path / "snli_1.0_test.txt"
    p.write_text("\n".join(lines) + "\n")
    s = load_source(str(p))
    assert [(e.id, e.label) for e in s] == [("p0", "entailment"), ("p1", "neutral")] and s.meta["dropped_no_gold"] == 1


def anli_rows():
    """ANLI JSONL (R1 dev): uid, context (the premise), hypothesis, label e/n/c, reason, model_label, ..."""
    return [{"uid": f"u{i}", "context": p, "hypothesis": h, "label": lab, "reason": "because", "model_label": "e",
             "emturk": False, "genre": "wiki", "tag": None} for i, ((p, h), lab) in enumerate(zip(PAIRS, "enc"))]


ANLI_OPTIONS = "premise=context,hypothesis=hypothesis,label=label,id=uid,labels=e:entailment/n:neutral/c:contradiction"


def test_anli_jsonl_with_a_column_and_label_map_from_the_command_line(tmp_path):
    p = _jsonl(tmp_path / "dev_r1.jsonl", anli_rows())
    s = load_source(parse_source_text(f"{p}:{ANLI_OPTIONS}"))
    assert [(e.id, e.label) for e in s] == [("u0", "entailment"), ("u1", "neutral"), ("u2", "contradiction")]


def test_anli_without_a_map_says_which_map_reads_it(tmp_path):
    p = _jsonl(tmp_path / "dev_r1.jsonl", anli_rows())
    with pytest.raises(DataError) as e:
        load_source(str(p))
    msg = str(e.value)
    assert "columns uid, context, hypothesis, label, reason" in msg and "match no known format" in msg
    assert "columns: {premise: context, hypothesis: hypothesis, label: label, id: uid}" in msg
    assert f"{p}:premise=context,hypothesis=hypothesis,label=label,id=uid" in msg
    with pytest.raises(DataError, match=r"unknown label 'e'.*labels: \{e: entailment, n: neutral, c: contradiction\}"):
        load_source(parse_source_text(f"{p}:premise=context,hypothesis=hypothesis,label=label"))


def _sick(tmp_path):
    """SICK.txt: tab-separated, pair_ID, sentence_A, sentence_B, relatedness_score, entailment_label in capitals."""
    lines = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_label\tSemEval_set"]
    lines += [f"{i + 1}\t{p}\t{h}\t3.5\t{lab}\tTRAIN" for i, ((p, h), lab) in
              enumerate(zip(PAIRS, ("ENTAILMENT", "NEUTRAL", "CONTRADICTION")))]
    p = tmp_path / "SICK.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_sick_tsv_with_only_a_column_map(tmp_path):
    p = _sick(tmp_path)
    s = load_source(DataSource(path=str(p), columns={"premise": "sentence_A", "hypothesis": "sentence_B",
                                                     "label": "entailment_label", "id": "pair_ID"}))
    assert [(e.id, e.label) for e in s] == [("1", "entailment"), ("2", "neutral"), ("3", "contradiction")]
    with pytest.raises(DataError, match="premise: sentence_A, hypothesis: sentence_B, label: entailment_label, id: pair_ID"):
        load_source(str(p))


def test_csv_with_other_names_and_numeric_labels_through_every_command(tmp_path, capsys):
    """The README's example: sentence1,sentence2,gold with gold 0/1/2, from the command line only."""
    p = tmp_path / "dev.csv"
    p.write_text("sentence1,sentence2,gold\n" + "".join(f'"{a}","{b}",{i}\n' for i, (a, b) in enumerate(PAIRS)))
    text = f"snli={p}:premise=sentence1,hypothesis=sentence2,label=gold,labels=0:entailment/1:neutral/2:contradiction"
    assert main(["data", "describe", text, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["sets"][0]
    assert d["name"] == "snli" and d["labels"] == {"entailment": 1, "neutral": 1, "contradiction": 1}
    assert main(["audit", text, "--json"]) == 0
    assert "snli" in json.loads(capsys.readouterr().out)["sources"]
    assert main(["filter", text.split("=", 1)[1], "--filter", "biased-lexical-overlap", "--out", str(tmp_path / "f")]) == 0
    assert json.loads((tmp_path / "f" / "report.json").read_text())["n_in"] == 3


def test_source_file_form(tmp_path):
    p = _sick(tmp_path)
    (tmp_path / "sick.yaml").write_text(f"path: {p}\ncolumns: {{premise: sentence_A, hypothesis: sentence_B, "
                                        "label: entailment_label}\nlabels: {ENTAILMENT: entailment, NEUTRAL: neutral, "
                                        "CONTRADICTION: null}\n")
    name, src = parse_named_source(f"sick=@{tmp_path / 'sick.yaml'}")
    s = load_source(src)
    assert name == "sick" and s.label_counts() == {"entailment": 1, "neutral": 1, "contradiction": 0}
    assert s.meta["dropped_by_label_map"] == 1
    (tmp_path / "num.yaml").write_text(f"path: {p}\nlabels: {{0: entailment}}\n")
    assert parse_source_text(f"@{tmp_path / 'num.yaml'}").labels == {"0": "entailment"}


@pytest.mark.parametrize("name", ["h.multinli_1.0_dev_matched.jsonl", "mnli_dev.jsonl", "dev.jsonl"])
def test_mnli_under_another_name_is_recognised_by_its_columns(tmp_path, name):
    rows = [{"pairID": f"{i}e", "genre": "fiction", "gold_label": "entailment", "sentence1": p, "sentence2": h}
            for i, (p, h) in enumerate(PAIRS)]
    s = load_source(str(_jsonl(tmp_path / name, rows)))
    assert s.meta["format"] == "mnli" and len(s) == 3 and s.examples[0].genre == "fiction"


def test_hans_under_another_name_and_generic_files(tmp_path):
    hans = _jsonl(tmp_path / "challenge.jsonl", [{"gold_label": "non-entailment", "sentence1": "The doctor saw the lawyer.",
                                                  "sentence2": "The lawyer saw the doctor.", "pairID": "ex0",
                                                  "heuristic": "lexical_overlap", "subcase": "ln_subject/object_swap",
                                                  "template": "temp1"}])
    s = load_source(str(hans))
    assert s.meta["format"] == "hans" and s.labels == ("entailment", "non-entailment") and s.name == "challenge"
    generic = tmp_path / "mine.csv"
    generic.write_bytes("\ufeffpremise,hypothesis,label\na,b,Entailment\n".encode())  # a spreadsheet's BOM
    s = load_source(str(generic))
    assert s.meta["format"] == "nli" and s.examples[0].label == "entailment"


def test_asked_format_that_the_columns_do_not_fit(tmp_path):
    p = _jsonl(tmp_path / "x.jsonl", [{"premise": "a", "hypothesis": "b", "label": "entailment"}])
    with pytest.raises(DataError, match=r"lacks the columns format 'mnli' reads \(sentence1, sentence2, gold_label\); "
                                        r"they fit format 'nli'"):
        load_source(DataSource(path=str(p), format="mnli"))


@pytest.mark.parametrize("text", [
    "dev.csv",
    "dev.csv:premise=sentence1,hypothesis=sentence2,label=gold,labels=0:entailment/1:neutral/2:contradiction",
    "hub:nyu-mll/multi_nli:validation_matched",
    "hub:x/y:test:format=nli,label=gold,label_space=entailment/non-entailment,keep_no_gold=true",
    "x.jsonl:format=nli,labels=-1:/0:entailment,name=mine",
])
def test_source_text_round_trips(text):
    assert source_text(parse_source_text(text)) == text


def test_source_parsing_details():
    name, src = parse_named_source("a=d/dev.csv:format=nli")
    assert (name, src.path, src.format) == ("a", "d/dev.csv", "nli")
    assert parse_named_source("d/dev.csv:label=gold")[0] is None
    assert parse_source_text("x.csv:labels=e=entailment,label_space=entailment/neutral").labels == {"e": "entailment"}
    assert default_set_name(parse_source_text("d/snli_1.0_dev.jsonl.gz")) == "snli_1.0_dev"
    assert default_set_name(parse_source_text("hub:nyu-mll/multi_nli:validation_matched")) == "multi_nli-validation_matched"
    with pytest.raises(ConfigError, match="keep_no_gold='perhaps': expected true or false"):
        parse_source_text("x.csv:keep_no_gold=perhaps")


def test_mapping_sources_as_in_a_train_classifier_config(tmp_path):
    p = _sick(tmp_path)
    s = load_source({"path": str(p), "columns": {"premise": "sentence_A", "hypothesis": "sentence_B",
                                                 "label": "entailment_label"}, "labels": {"NEUTRAL": None}})
    assert len(s) == 2 and s.meta["dropped_by_label_map"] == 1
    with pytest.raises(ConfigError, match="data source: field 'colums': unknown field"):
        load_source({"path": str(p), "colums": {}})
    with pytest.raises(ConfigError, match="expected a path, hub:ID:SPLIT or a mapping"):
        load_source(3)
