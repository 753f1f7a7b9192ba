"""Every subcommand against a table of bad inputs: exit 2, one error line naming where and what, no traceback.

    python -m pytest -q tests/test_bad_inputs.py

Kinds: data files (malformed, missing column, unknown label, empty, truncated .gz, wrong path,
a directory, not UTF-8, columns of no known format, ...), configs, `--set` values, source
options, checkpoints (missing, empty, truncated adapter / tokenizer / config, another stage's
directory, another base model's adapter, unfinished), prediction files and run directories.
The checkpoints are tiny-llama ones, built once for the module.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from blindspot.cli import main
from blindspot.data.example import MNLI_LABELS, NLIExample
from blindspot.storage import atomic_write_jsonl

EXAMPLES = [NLIExample(f"e{i}", f"The cat {i} sat on the mat.", f"A cat sat {i}.", MNLI_LABELS[i % 3])
            for i in range(12)]
MNLI_ROW = {"pairID": "1", "genre": "fiction", "gold_label": "entailment", "sentence1": "A man runs .",
            "sentence2": "A man moves ."}


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints: a classifier, one on another base, a generator, and good data files."""
    import torch

    from blindspot.training.generator import GeneratorSpec, train_generator
    from blindspot.training.loop import LoraSpec
    from blindspot.models.resolve import build_tiny_llama
    from blindspot.training.classifier import ClassifierSpec, OptimSpec, train_classifier

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bad-inputs")
    texts = [f"{e.premise} {e.hypothesis}" for e in EXAMPLES]
    base = build_tiny_llama(root / "base", texts)
    base2 = build_tiny_llama(root / "base2", [t + " other" for t in texts], hidden_size=32)
    spec = ClassifierSpec(model=str(base), lora=LoraSpec(r=4), device="cpu", optim=OptimSpec(batch_size=4))
    out = {"root": root, "base": base, "clf": train_classifier(spec, EXAMPLES[:6], root / "clf"),
           "clf2": train_classifier(spec.model_copy(update={"model": str(base2)}), [], root / "clf2"),
           "gen": train_generator(GeneratorSpec(model=str(base), lora=LoraSpec(r=4), device="cpu",
                                                optim=OptimSpec(batch_size=6)), EXAMPLES, root / "gen")}
    out["data"] = root / "dev.jsonl"
    atomic_write_jsonl(out["data"], [{**MNLI_ROW, "pairID": e.id, "gold_label": e.label, "sentence1": e.premise,
                                      "sentence2": e.hypothesis} for e in EXAMPLES])
    torch.set_num_threads(threads)
    return out


def fill(needles, **values) -> list[str]:
    """Needles with {name} placeholders replaced (str.replace: needles may hold braces)."""
    out = []
    for n in needles:
        for k, v in values.items():
            n = n.replace("{" + k + "}", str(v))
        out.append(n)
    return out


def run_cli(capsys, argv: list) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_clear_error(code: int, err: str, command: str, *needles: str) -> None:
    """Exit 2; one 'blindspot CMD: error:' line, the last one on stderr, holding every needle; no traceback."""
    assert code == 2, err
    assert "Traceback" not in err, err
    prefix = f"blindspot {command}: error: "
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(prefix)]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for needle in needles:
        assert needle in errors[0], errors[0]


# --- bad data files ------------------------------------------------------------------------------
# (id, file name, content (str or bytes; None = do not create), command, needles); {p} = the path

def _gz_truncated() -> bytes:
    data = gzip.compress("".join(json.dumps({**MNLI_ROW, "pairID": str(i)}) + "\n" for i in range(3000)).encode())
    return data[: len(data) // 2]


_LINE = json.dumps(MNLI_ROW) + "\n"
DATA_CASES = [
    ("malformed-json", "a.jsonl", _LINE + '{"pairID": "2", "gold_label"\n', "data describe", ["{p}:2:", "malformed JSON"]),
    ("missing-column", "a.jsonl", _LINE + json.dumps({"gold_label": "neutral", "sentence1": "x"}) + "\n",
     "data describe", ["{p}:2:", "missing column 'sentence2'", "the row has"]),
    ("unknown-label", "a.jsonl", _LINE + json.dumps({**MNLI_ROW, "gold_label": "entails"}) + "\n", "audit",
     ["{p}:2:", "unknown label 'entails'", "entailment, neutral, contradiction"]),
    ("empty-file", "a.jsonl", "", "data describe", ["{p}", "empty file"]),
    ("blank-lines-only", "a.jsonl", "\n\n", "filter", ["{p}", "empty file"]),
    ("truncated-gz", "a.jsonl.gz", _gz_truncated(), "data describe", ["{p}", "truncated or corrupt gzip"]),
    ("wrong-path", "nosuch.jsonl", None, "audit", ["{p}", "no such file"]),
    ("directory", "adir.jsonl", "DIR", "data describe", ["{p}", "is a directory"]),
    ("not-utf8", "a.jsonl", b'{"sentence1": "caf\xe9"}\n', "audit", ["{p}:1:", "not UTF-8"]),
    ("json-array-line", "a.jsonl", "[1, 2]\n", "filter", ["{p}:1:", "expected a JSON object"]),
    ("csv-wrong-field-count", "a.csv", "premise,hypothesis,label\na,b,entailment\nc,d\n", "data describe",
     ["{p}:3:", "2 fields, expected 3"]),
    ("header-only-tsv", "a.tsv", "premise\thypothesis\tlabel\n", "audit", ["{p}", "no data rows"]),
    ("unknown-extension", "a.xlsx", "x", "data describe", ["{p}", "unknown file type"]),
    ("columns-of-no-format", "sick.tsv", "pair_ID\tsentence_A\tsentence_B\tentailment_label\n1\ta\tb\tNEUTRAL\n",
     "filter", ["{p}", "match no known format", "pair_ID, sentence_A", "premise=sentence_A", "label=entailment_label"]),
    ("integer-labels-without-map", "hf.jsonl", json.dumps({"premise": "a", "hypothesis": "b", "label": 0}) + "\n",
     "data describe", ["{p}:1:", "unknown label 0", "labels: {0: entailment, 1: neutral, 2: contradiction}"]),
    ("null-premise", "a.jsonl", json.dumps({**MNLI_ROW, "sentence1": None}) + "\n", "audit",
     ["{p}:1:", "null value in column 'sentence1'"]),
    ("number-as-premise", "a.jsonl", json.dumps({**MNLI_ROW, "sentence1": 3}) + "\n", "data describe",
     ["{p}:1:", "must be text"]),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(case, tmp_path, capsys):
    _, name, content, command, needles = case
    p = tmp_path / name
    if content == "DIR":
        p.mkdir()
    elif isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        p.write_text(content)
    argv = [*command.split(), p] + (["--filter", "biased-lexical-overlap", "--out", tmp_path / "o"]
                                    if command == "filter" else [])
    assert_one_clear_error(*run_cli(capsys, argv), command, *fill(needles, p=p))


def test_unset_data_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BLINDSPOT_DATA", raising=False)
    assert_one_clear_error(*run_cli(capsys, ["data", "describe", "$BLINDSPOT_DATA/x.jsonl"]), "data describe",
                           "$BLINDSPOT_DATA", "not set")


# --- source options on the command line ----------------------------------------------------------

SOURCE_CASES = [
    ("unknown-option", "{p}:colour=red", ["--set", "unknown option 'colour'", "premise"]),
    ("bad-format", "{p}:format=xml", ["field 'format'", "'mnli', 'hans' or 'nli'"]),
    ("option-without-value", "{p}:premise=", ["is not KEY=VALUE"]),
    ("column-not-in-file", "{p}:premise=sentence1,hypothesis=sentence2,label=gold",
     ["{p}", "column map label='gold': no column 'gold' in the file", "columns: pairID, genre, gold_label"]),
    ("column-map-key-unknown", "{p}:premise=sentence1,hypothesis=sentence2,label=gold_label,speaker=x",
     ["unknown option 'speaker'"]),
    ("label-map-item", "{p}:premise=sentence1,hypothesis=sentence2,label=gold_label,labels=e-entailment",
     ["label map item 'e-entailment' is not RAW:LABEL"]),
    ("wrong-format-for-columns", "{p}:format=nli", ["{p}", "lacks the columns format 'nli' reads", "fit format 'mnli'"]),
    ("maps-with-other-format", "{p}:format=mnli,label=gold_label,premise=a,hypothesis=b", ["for format 'nli' only"]),
    ("source-file-missing", "@{d}/nosuch.yaml", ["no such source file"]),
    ("source-file-bad-field", "@{d}/src.yaml", ["src.yaml", "field 'colums'", "unknown field"]),
    ("hub-without-split", "hub:nyu-mll/multi_nli", ["split is required"]),
]


@pytest.mark.parametrize("case", SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_bad_source_option(case, ck, tmp_path, capsys):
    _, text, needles = case
    (tmp_path / "src.yaml").write_text(f"path: {ck['data']}\ncolums: {{premise: a}}\n")
    text = fill([text], p=ck["data"], d=tmp_path)[0]
    argv = ["evaluate", ck["clf"], "--set", f"x={text}", "--out", tmp_path / "o", "--device", "cpu"]
    assert_one_clear_error(*run_cli(capsys, argv), "evaluate", *fill(needles, p=ck["data"]))


def test_unknown_device(ck, tmp_path, capsys):
    argv = ["evaluate", ck["clf"], "--set", f"m={ck['data']}", "--out", tmp_path / "o", "--device", "nonsense"]
    assert_one_clear_error(*run_cli(capsys, argv), "evaluate", "device: 'nonsense' is not a device")


def test_duplicate_set_names(ck, tmp_path, capsys):
    argv = ["evaluate", ck["clf"], "--set", f"a={ck['data']}", "--set", f"a={ck['data']}", "--out", tmp_path / "o"]
    assert_one_clear_error(*run_cli(capsys, argv), "evaluate", "the name 'a' is used twice")


# --- configs and --set overrides ------------------------------------------------------------------

def _config(data: Path, **changes) -> dict:
    cfg = {"name": "t", "model": "tiny-llama", "data": {"train": {"path": str(data)}, "eval": {"m": {"path": str(data)}}},
           "start_sizes": [0], "augment": {"sources": ["synthetic"], "sizes": [3]}, "generation": {"per_label": 2}}
    for key, value in changes.items():
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return cfg


CONFIG_CASES = [
    ("train-path-missing", {"data.train": {"path": "/nonexistent/train.jsonl"}}, [],
     ["{c}", "field 'data.train.path'", "/nonexistent/train.jsonl", "no such file"]),
    ("eval-path-directory", {"data.eval": {"m": {"path": "{d}"}}}, [], ["field 'data.eval.m.path'", "is a directory"]),
    ("eval-columns-of-no-format", {"data.eval": {"m": {"path": "{d}/sick.tsv"}}}, [],
     ["field 'data.eval.m'", "sick.tsv", "match no known format", "premise=sentence_A"]),
    ("hub-source-without-split", {"data.train": {"hub": "nyu-mll/multi_nli"}}, [],
     ["field 'data.train'", "a split is required"]),
    ("per-label-unknown-label", {"generation.per_label": {"entailment": 5, "maybe": 5}}, [],
     ["field 'generation.per_label'", "unknown label 'maybe'", "entailment, neutral, contradiction"]),
    ("per-label-left-out", {"generation.per_label": {"entailment": 5}}, [],
     ["field 'generation.per_label'", "no count for neutral, contradiction"]),
    ("per-label-zero", {"generation.per_label": 0}, [], ["field 'generation.per_label'", ">= 1"]),
    ("unknown-field", {"colour": "red"}, [], ["field 'colour'", "unknown field"]),
    ("bad-source-format", {"data.train": {"path": "x.jsonl", "format": "xml"}}, [], ["field 'data.train.format'"]),
    ("unknown-augment-source", {"augment.sources": ["magic"]}, [], ["field 'augment.sources'", "magic"]),
    ("set-without-equals", {}, ["--set", "seeds"], ["override 'seeds'", "KEY=VALUE"]),
    ("set-duplicate-seeds", {}, ["--set", "seeds=[0,0]"], ["seeds must be distinct"]),
    ("set-negative-size", {}, ["--set", "augment.sizes=[-3]"], ["field 'augment.sizes'", ">= 1"]),
    ("set-wrong-type", {}, ["--set", "data.clean=maybe"], ["field 'data.clean'"]),
    ("set-into-a-value", {}, ["--set", "name.x=1"], ["override 'name.x=1'", "'name' is not a section"]),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(case, ck, tmp_path, capsys):
    import yaml

    _, changes, extra, needles = case
    cfg = _config(ck["data"], **json.loads(json.dumps(changes).replace("{d}", str(tmp_path))))
    (tmp_path / "sick.tsv").write_text("pair_ID\tsentence_A\tsentence_B\tentailment_label\n1\ta\tb\tNEUTRAL\n")
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(cfg))
    argv = ["run", c, "--dry-run", "--out", tmp_path / "run", *extra]
    assert_one_clear_error(*run_cli(capsys, argv), "run", *fill(needles, c=c))


@pytest.mark.parametrize("text,needles", [("name: [unclosed\n", ["c.yaml:", "not valid YAML"]),
                                          ("- a list\n", ["expected a YAML mapping"]),
                                          (None, ["no such config file"])], ids=["not-yaml", "not-mapping", "missing"])
def test_unreadable_config(text, needles, tmp_path, capsys):
    c = tmp_path / "c.yaml"
    if text is not None:
        c.write_text(text)
    assert_one_clear_error(*run_cli(capsys, ["run", c, "--dry-run"]), "run", *needles)


# --- checkpoints ------------------------------------------------------------------------------------

def _broken(ck, tmp_path, what: str) -> Path:
    """A copy of a good checkpoint with one thing broken."""
    kind, _, how = what.partition(":")
    d = tmp_path / "ckpt"
    shutil.copytree(ck[kind], d)
    if how == "truncate-adapter":
        with open(d / "adapter_model.safetensors", "r+b") as f:
            f.truncate(5000)
    elif how == "empty-adapter":
        (d / "adapter_model.safetensors").write_bytes(b"")
    elif how == "corrupt-adapter-config":
        (d / "adapter_config.json").write_text('{"peft_type": ')
    elif how == "truncate-tokenizer":
        (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text()[:300])
    elif how == "no-tokenizer":
        (d / "tokenizer.json").unlink()
        (d / "tokenizer_config.json").unlink()
    elif how == "corrupt-info":
        (d / "classifier.json").write_text("{")
    elif how == "no-done":
        (d / "DONE").unlink()
    elif how == "other-base-adapter":  # adapter files of a classifier trained on another base
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copy(ck["clf2"] / name, d / name)
    elif how == "other-base-fingerprint":
        info = json.loads((d / "classifier.json").read_text())
        info["base"]["fingerprint"] = "0" * 16
        (d / "classifier.json").write_text(json.dumps(info))
    elif how == "missing-adapter":
        (d / "adapter_model.safetensors").unlink()
    return d


CHECKPOINT_CASES = [
    ("missing-dir", None, ["no such classifier directory"]),
    ("empty-dir", "EMPTY", ["no classifier.json", "expected a saved classifier"]),
    ("truncated-adapter", "clf:truncate-adapter", ["adapter_model.safetensors", "truncated or corrupt"]),
    ("empty-adapter", "clf:empty-adapter", ["adapter_model.safetensors", "truncated or corrupt"]),
    ("missing-adapter", "clf:missing-adapter", ["missing adapter_model.safetensors"]),
    ("corrupt-adapter-config", "clf:corrupt-adapter-config", ["adapter_config.json", "truncated or corrupt JSON"]),
    ("truncated-tokenizer", "clf:truncate-tokenizer", ["tokenizer.json", "truncated or corrupt JSON"]),
    ("no-tokenizer", "clf:no-tokenizer", ["no tokenizer files"]),
    ("corrupt-classifier-json", "clf:corrupt-info", ["classifier.json", "corrupt"]),
    ("unfinished", "clf:no-done", ["incomplete classifier (no DONE marker)"]),
    ("generator-dir", "gen:", ["no classifier.json", "this is a saved generator"]),
    ("base-model-dir", "base:", ["no classifier.json", "this is a base model checkpoint"]),
    ("other-stage-dir", "STAGE", ["no classifier.json", "this is the output of a 'prepare' stage"]),
    ("other-base-adapter", "clf:other-base-adapter", ["adapter does not fit base"]),
    ("other-base-fingerprint", "clf:other-base-fingerprint", ["another base model"]),
]


@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_classifier_checkpoint(case, ck, tmp_path, capsys):
    _, what, needles = case
    d = tmp_path / "nosuch" if what is None else tmp_path / "empty" if what in ("EMPTY", "STAGE") else \
        _broken(ck, tmp_path, what)
    if what == "STAGE":  # a `blindspot run` stage directory that holds no model
        d = tmp_path / "stages" / "prepare-0123"
        d.mkdir(parents=True)
        (d / "stage.json").write_text(json.dumps({"stage": "prepare", "spec": {}}))
        (d / "pool.jsonl").write_text("")
    if what == "EMPTY":
        d.mkdir()
    argv = ["evaluate", d, "--set", f"m={ck['data']}", "--out", tmp_path / "o", "--device", "cpu"]
    assert_one_clear_error(*run_cli(capsys, argv), "evaluate", *needles)


@pytest.mark.parametrize("what,needles", [
    ("gen:truncate-adapter", ["adapter_model.safetensors", "truncated or corrupt"]),
    ("gen:truncate-tokenizer", ["tokenizer.json", "truncated or corrupt JSON"]),
    ("clf:", ["no generator.json", "this is a saved classifier"]),
], ids=["truncated-adapter", "truncated-tokenizer", "classifier-dir"])
def test_bad_generator_checkpoint(what, needles, ck, tmp_path, capsys):
    d = _broken(ck, tmp_path, what)
    argv = ["generate", "--generator", d, "--n-per-label", "1", "--out", tmp_path / "o", "--device", "cpu"]
    assert_one_clear_error(*run_cli(capsys, argv), "generate", *needles)


def test_continue_training_from_truncated_adapter(ck, tmp_path, capsys):
    d = _broken(ck, tmp_path, "clf:truncate-adapter")
    argv = ["train-classifier", "--model", ck["base"], "--init-from", d, "--data", ck["data"], "--n", "3",
            "--out", tmp_path / "o", "--device", "cpu"]
    assert_one_clear_error(*run_cli(capsys, argv), "train-classifier", "adapter_model.safetensors", "truncated")


def test_base_model_with_truncated_weights(ck, tmp_path, capsys):
    base = tmp_path / "base"
    shutil.copytree(ck["base"], base)
    with open(base / "model.safetensors", "r+b") as f:
        f.truncate(5000)
    argv = ["train-classifier", "--model", base, "--data", ck["data"], "--n", "3", "--out", tmp_path / "o",
            "--device", "cpu"]
    assert_one_clear_error(*run_cli(capsys, argv), "train-classifier", str(base), "cannot load the model weights")


def test_train_generator_on_unknown_labels(ck, tmp_path, capsys):
    p = tmp_path / "hf.csv"
    p.write_text("premise,hypothesis,label\na,b,0\n")
    argv = ["train-generator", "--model", ck["base"], "--data", p, "--out", tmp_path / "o", "--device", "cpu"]
    assert_one_clear_error(*run_cli(capsys, argv), "train-generator", f"{p}:2:", "unknown label '0'")


# --- prediction files (compare) and run directories (report) -----------------------------------------

@pytest.fixture
def predictions(tmp_path) -> Path:
    p = tmp_path / "a.jsonl"
    atomic_write_jsonl(p, [{"id": f"x{i}", "gold": "entailment", "pred": "entailment", "correct": True}
                           for i in range(3)])
    return p


@pytest.mark.parametrize("content,needles", [
    (None, ["b.jsonl", "no such file"]),
    ('{"id": "x0", "gold"\n', ["b.jsonl:1:", "malformed JSON"]),
    ('{"id": "x0", "gold": "entailment"}\n', ["b.jsonl:1:", "expected fields id (str), gold (str), correct (bool)"]),
    ("".join(json.dumps({"id": f"y{i}", "gold": "entailment", "correct": True}) + "\n" for i in range(3)),
     ["different sets"]),
    ("", ["b.jsonl", "empty file"]),
], ids=["missing", "malformed", "missing-field", "other-set", "empty"])
def test_bad_prediction_file(content, needles, predictions, tmp_path, capsys):
    b = tmp_path / "b.jsonl"
    if content is not None:
        b.write_text(content)
    assert_one_clear_error(*run_cli(capsys, ["compare", predictions, b]), "compare", *needles)


@pytest.mark.parametrize("setup,needles", [
    ("missing", ["no such directory"]),
    ("empty", ["no results found", "results/index.json"]),
    ("corrupt-index", ["index.json:1:", "not valid JSON"]),
    ("csv-missing-columns", ["results.csv", "missing columns"]),
], ids=["missing", "empty", "corrupt-index", "csv-missing-columns"])
def test_bad_run_directory(setup, needles, tmp_path, capsys):
    run_dir = tmp_path / "run"
    if setup != "missing":
        (run_dir / "results").mkdir(parents=True)
    if setup == "corrupt-index":
        (run_dir / "results" / "index.json").write_text("{")
    elif setup == "csv-missing-columns":
        (run_dir / "results" / "results.csv").write_text("eval_set,accuracy\nm,0.5\n")
    assert_one_clear_error(*run_cli(capsys, ["report", run_dir]), "report", *needles)


@pytest.mark.parametrize("flag", ["--max-length", "--per-label", "--per-subcase"])
@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_evaluate_size_options_must_be_positive(flag, value, ck, tmp_path, capsys):
    argv = ["evaluate", ck["clf"], "--set", f"m={ck['data']}", "--out", tmp_path / "o", flag, value]
    with pytest.raises(SystemExit) as stop:  # argparse's own error: usage, then one error line
        main([str(a) for a in argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("blindspot evaluate: error:") and flag in last and "whole number >= 1" in last, err
    assert not (tmp_path / "o").exists()


def test_generate_per_label_count_for_an_unknown_label(ck, tmp_path, capsys):
    argv = ["generate", "--generator", ck["gen"], "--n-per-label", "maybe=3", "--out", tmp_path / "o", "--device", "cpu"]
    assert_one_clear_error(*run_cli(capsys, argv), "generate", "n_per_label", "unknown label(s) 'maybe'",
                           "entailment")
