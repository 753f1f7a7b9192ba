"""Tests for the MNLI, HANS and generic NLI loaders and for DataSource / load_source (no network)."""

from __future__ import annotations

import gzip
import json

import pytest

from blindspot.data import DataSource, load_hans, load_mnli, load_nli, load_source
from blindspot.data.sources import detect_format, parse_source
from blindspot.errors import ConfigError, DataError

MNLI_TXT_HEADER = ["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
                   "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre",
                   "label1", "label2", "label3", "label4", "label5"]
GLUE_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
HANS_HEADER = ["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
               "sentence2_parse", "sentence1", "sentence2", "pairID", "heuristic", "subcase", "template"]
PAIRS = [("entailment", 'He said "hi".', "He spoke.", "1e", "fiction"),
         ("-", "A cat sat.", "A dog sat.", "2n", "slate"),
         ("contradiction", "It rained.", "It was dry.", "3c", "travel")]


def _tsv(path, header, rows):
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def test_mnli_official_jsonl_gz_drops_and_counts_no_gold(tmp_path):
    p = tmp_path / "multinli_1.0_dev_matched.jsonl.gz"
    with gzip.open(p, "wt") as f:
        for lab, s1, s2, pid, genre in PAIRS:
            f.write(json.dumps({"gold_label": lab, "sentence1": s1, "sentence2": s2, "pairID": pid,
                                "genre": None if genre == "slate" else genre}) + "\n")
    s = load_mnli(p)
    assert s.name == "mnli-dev-matched" and s.meta["kind"] == "mnli"
    assert [e.id for e in s] == ["1e", "3c"] and s.meta["dropped_no_gold"] == 1
    kept = load_mnli(p, keep_no_gold=True)
    assert [e.label for e in kept] == ["entailment", "-", "contradiction"] and kept.examples[1].genre is None


def test_mnli_official_txt_and_glue_tsv_keep_quotes(tmp_path):
    txt = _tsv(tmp_path / "multinli_1.0_train.txt", MNLI_TXT_HEADER,
               [[lab, "(x)", "(y)", "(x)", "(y)", s1, s2, "p", pid, g, lab, "", "", "", ""] for lab, s1, s2, pid, g in PAIRS])
    glue = _tsv(tmp_path / "dev_mismatched.tsv", GLUE_HEADER,
                [[str(i), "p", pid, g, "(x)", "(y)", "(x)", "(y)", s1, s2, lab, lab] for i, (lab, s1, s2, pid, g) in enumerate(PAIRS)])
    a, b = load_source(str(txt)), load_source(str(glue))
    assert a.name == "mnli-train" and b.name == "mnli-dev-mismatched"
    assert [e.premise for e in a] == [e.premise for e in b] == ['He said "hi".', "It rained."]
    assert a.examples[0].genre == "fiction" and a.label_counts() == {"entailment": 1, "neutral": 0, "contradiction": 1}


def test_mnli_unknown_label_names_file_line_and_labels(tmp_path):
    p = tmp_path / "multinli_1.0_train.jsonl"
    p.write_text(json.dumps({"gold_label": "entailment", "sentence1": "a", "sentence2": "b", "pairID": "1"}) + "\n"
                 + json.dumps({"gold_label": "maybe", "sentence1": "a", "sentence2": "b", "pairID": "2"}) + "\n")
    with pytest.raises(DataError, match=r"multinli_1\.0_train\.jsonl:2: unknown label 'maybe' \(expected one of entailment, neutral, contradiction"):
        load_mnli(p)


def test_mnli_missing_column_names_file_line_column(tmp_path):
    p = tmp_path / "multinli_1.0_train.jsonl"
    p.write_text(json.dumps({"gold_label": "entailment", "sentence1": "a", "pairID": "1"}) + "\n")
    with pytest.raises(DataError, match=r"\.jsonl:1: missing column 'sentence2' \(field hypothesis\)"):
        load_mnli(p)


def test_hans_txt_and_jsonl(tmp_path):
    rows = [["non-entailment", "(x)", "(y)", "(x)", "(y)", "The doctor saw the lawyer .", "The lawyer saw the doctor .",
             "ex0", "lexical_overlap", "ln_subject/object_swap", "temp1"],
            ["entailment", "(x)", "(y)", "(x)", "(y)", "The doctor near the actor danced .", "The actor danced .",
             "ex1", "subsequence", "se_PP_on_obj", "temp2"]]
    txt = _tsv(tmp_path / "heuristics_evaluation_set.txt", HANS_HEADER, rows)
    js = tmp_path / "heuristics_train_set.jsonl"
    js.write_text("".join(json.dumps(dict(zip(HANS_HEADER, r))) + "\n" for r in rows))
    a, b = load_source(str(txt)), load_hans(js)
    assert (a.name, b.name) == ("hans-eval", "hans-train") and a.labels == ("entailment", "non-entailment")
    assert a.examples == b.examples
    assert a.examples[0].heuristic == "lexical_overlap" and a.examples[0].subcase == "ln_subject/object_swap"
    assert a.examples[1].template == "temp2" and a.meta["kind"] == "hans"


def test_generic_nli_with_column_and_label_maps(tmp_path):
    p = tmp_path / "anli_dev.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in [
        {"uid": "u1", "context": "A man runs.", "hypothesis": "A person moves.", "label": "e", "tag": "x"},
        {"uid": "u2", "context": "A man runs.", "hypothesis": "A man sleeps.", "label": "c", "tag": None},
        {"uid": "u3", "context": "A man runs.", "hypothesis": "?", "label": "skip"}]))
    s = load_nli(p, columns={"premise": "context", "hypothesis": "hypothesis", "label": "label", "id": "uid"},
                 label_map={"e": "entailment", "n": "neutral", "c": "contradiction", "skip": None})
    assert [(e.id, e.label) for e in s] == [("u1", "entailment"), ("u2", "contradiction")]
    assert s.labels == ("entailment", "neutral", "contradiction") and s.meta["dropped_by_label_map"] == 1


def test_generic_defaults_read_internal_examples_and_two_way_space(tmp_path):
    p = tmp_path / "challenge.csv"
    p.write_text('premise,hypothesis,label\n"A, b",c,0\nd,e,1\n')
    s = load_source(DataSource(path=str(p), labels={"0": "entailment", "1": "non-entailment"}))
    assert s.labels == ("entailment", "non-entailment")
    assert [(e.id, e.premise, e.label) for e in s] == [("challenge-2", "A, b", "entailment"), ("challenge-3", "d", "non-entailment")]


@pytest.mark.parametrize("columns,match", [
    ({"premise": "context", "hypothesis": "hypothesis", "label": "label"}, r"column map premise='context': no column 'context' in the file"),
    ({"premise": "premise", "hypothesis": "hypothesis", "label": "label", "speaker": "who"}, r"column map key 'speaker' is not a field"),
    ({"premise": "premise", "label": "label"}, r"column map lacks required field\(s\) hypothesis"),
])
def test_invalid_column_map_is_a_clear_error(tmp_path, columns, match):
    p = tmp_path / "set.tsv"
    p.write_text("premise\thypothesis\tlabel\na\tb\tentailment\n")
    with pytest.raises(DataError, match=match):
        load_nli(p, columns=columns)


def test_invalid_column_map_on_jsonl_names_line(tmp_path):
    p = tmp_path / "set.jsonl"
    p.write_text(json.dumps({"premise": "a", "hypothesis": "b", "label": "entailment"}) + "\n")
    with pytest.raises(DataError, match=r"set\.jsonl:1: missing column 'ctx' \(field premise\)"):
        load_nli(p, columns={"premise": "ctx", "hypothesis": "hypothesis", "label": "label"})


def test_source_parsing_detection_and_conflicts(tmp_path):
    assert parse_source("hub:nyu-mll/multi_nli:validation_matched") == DataSource(hub="nyu-mll/multi_nli", split="validation_matched")
    assert detect_format("x/multinli_1.0_train.jsonl.gz") == "mnli" and detect_format("dev_matched.tsv") == "mnli"
    assert detect_format("heuristics_train_set.txt") == "hans" and detect_format("jhu-cogsci/hans") == "hans"
    assert detect_format("snli_1.0_dev.jsonl") == "nli"
    with pytest.raises(ConfigError, match="split is required"):
        load_source("hub:nyu-mll/multi_nli")
    with pytest.raises(ConfigError, match="for format 'nli' only"):
        load_source(DataSource(path="multinli_1.0_train.jsonl", format="mnli", columns={"premise": "a"}))
    assert json.loads(DataSource(path="x.jsonl").model_dump_json())["path"] == "x.jsonl"


def _hub_mnli_dataset():
    import datasets

    return datasets.Dataset.from_dict({
        "promptID": [1, 2, 3], "pairID": ["1e", "2n", "3c"], "premise": ["A.", "B.", "C."],
        "hypothesis": ["a", "b", "c"], "genre": ["fiction", "slate", "travel"], "label": [0, -1, 2]})


def test_mnli_hub_path_with_save_to_disk_copy(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets.DatasetDict({"validation_matched": _hub_mnli_dataset()}).save_to_disk(str(tmp_path / "multi_nli"))
    s = load_source(f"hub:{tmp_path / 'multi_nli'}:validation_matched")
    assert s.name == "mnli-dev-matched" and [(e.id, e.label) for e in s] == [("1e", "entailment"), ("3c", "contradiction")]
    assert s.meta["dropped_no_gold"] == 1
    with pytest.raises(DataError, match="no split 'train'"):
        load_source(f"hub:{tmp_path / 'multi_nli'}:train")


def test_hans_hub_path_with_local_parquet_folder(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "hans" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({
        "premise": ["The doctor saw the lawyer .", "The actor slept ."], "hypothesis": ["The lawyer saw the doctor .", "The actor slept ."],
        "label": [1, 0], "heuristic": ["lexical_overlap", "subsequence"], "subcase": ["ln_subject/object_swap", "se_PP_on_obj"],
        "template": ["temp1", "temp2"]}).to_parquet(str(tmp_path / "hans" / "data" / "validation-00000-of-00001.parquet"))
    s = load_source(DataSource(hub=str(tmp_path / "hans"), split="validation", format="hans"))
    assert s.name == "hans-eval" and [(e.id, e.label) for e in s] == [("ex0", "non-entailment"), ("ex1", "entailment")]
    with pytest.raises(DataError, match=r"hub:.*:nosuch: cannot load"):
        load_source(DataSource(hub=str(tmp_path / "hans"), split="nosuch", format="hans"))
