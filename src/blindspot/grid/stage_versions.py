"""Cache keys that follow the code: a version per stage kind, and the code each version covers.

    python -m blindspot.grid.stage_versions            # which stages' code changed since it was recorded
    python -m blindspot.grid.stage_versions --record   # record the current code (after bumping what changed)

A stage directory's hash covers its spec, its inputs' hashes and `STAGE_VERSIONS[kind]`, so an
upgraded blindspot whose `start` stage trains differently reruns every `start` (and what reads
it) instead of reusing results of the old code, while stages whose code did not change stay
cached. `STAGE_CODE` names the code that decides what each kind writes: whole modules, packages
(a trailing `/`) or single functions (`module.py:function`). Their fingerprint is taken over the
syntax tree without docstrings, so comments, docstrings and formatting do not count.

The rule, enforced by tests/test_stage_versions.py: when a kind's fingerprint differs from the one
recorded in stage_code.json, the change either alters what the stage writes (its outputs, or
numbers in them), then bump its version here, or it does not (a rename, a refactor, a log line),
then leave the version; either way record the new fingerprints with `--record`, so that the
decision is made, and seen in review, each time.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # blindspot/: STAGE_CODE paths are relative to it
RECORD = Path(__file__).resolve().parent / "stage_code.json"

# 1 for every kind: the code of blindspot 0.1.0 (and the old single CODE_VERSION "1"), so stores
# written before per-stage versions stay valid.
STAGE_VERSIONS: dict[str, int] = {
    "prepare": 1, "base": 1, "start": 1, "generator": 1, "generate": 1, "filter": 1, "augment": 1,
    "evaluate": 1, "audit": 1,
}

_DATA = ("data/", "stages/common.py")
_MODEL = ("models/resolve.py", "models/load.py", "models/checkpoints.py", "models/checkpoint_files.py",
          "templates.py", "models/kvcache.py")
_TRAINING = ("training/loop.py", "training/resume.py", "training/classifier.py", "stages/start.py")
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "prepare": (*_DATA, "stages/prepare.py"),
    "base": (*_DATA, *_MODEL, "training/loop.py", "training/generator.py", "stages/base.py"),
    "start": (*_DATA, *_MODEL, *_TRAINING),
    "augment": (*_DATA, *_MODEL, *_TRAINING, "training/grouped.py", "training/group_rng.py",
                "training/group_runs.py:train_together_into", "mixture.py:mixture_counts",
                "mixture.py:sample_mixture", "stages/augment.py"),
    "generator": (*_DATA, *_MODEL, "training/loop.py", "training/resume.py", "training/generator.py",
                  "stages/start.py:ModelChoice", "stages/generator.py"),
    "generate": (*_DATA, *_MODEL, "training/generator.py", "generation/sample.py", "generation/decode.py",
                 "generation/engines.py", "generation/parsing.py", "generation/vllm_engine.py", "stages/generate.py"),
    "filter": (*_DATA, "heuristics.py", "filters.py", "stages/filter.py"),
    "evaluate": (*_DATA, *_MODEL, "training/classifier.py", "evaluate.py", "predict.py", "heuristics.py",
                 "reliance.py", "stats.py", "stages/evaluate.py"),
    "audit": (*_DATA, "heuristics.py", "audit.py", "stages/audit.py"),
}


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _fingerprint_file(path: Path, function: str | None = None) -> str:
    tree = _without_docstrings(ast.parse(path.read_text(encoding="utf-8")))
    if function is not None:
        found = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == function]
        if not found:
            raise KeyError(f"{path.name}: no function {function} (STAGE_CODE names it)")
        tree = found[0]
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def code_fingerprint(kind: str) -> str:
    """sha256 over the syntax trees of the code STAGE_CODE names for `kind`."""
    h = hashlib.sha256()
    for entry in STAGE_CODE[kind]:
        name, _, function = entry.partition(":")
        paths = sorted((PACKAGE / name).rglob("*.py")) if name.endswith("/") else [PACKAGE / name]
        for path in paths:
            h.update(f"{path.relative_to(PACKAGE)}:{function}={_fingerprint_file(path, function or None)};".encode())
    return h.hexdigest()[:16]


def recorded() -> dict[str, dict]:
    return json.loads(RECORD.read_text(encoding="utf-8")) if RECORD.is_file() else {}


def stale() -> list[str]:
    """Kinds whose code or version differs from what stage_code.json records, one line each."""
    rec, lines = recorded(), []
    for kind in STAGE_VERSIONS:
        now = {"version": STAGE_VERSIONS[kind], "code": code_fingerprint(kind)}
        if rec.get(kind) != now:
            was = rec.get(kind, {})
            lines.append(f"{kind}: code {was.get('code')} -> {now['code']}, version {was.get('version')} -> "
                         f"{now['version']} (code: {', '.join(STAGE_CODE[kind])})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blindspot.grid.stage_versions", description=__doc__.split("\n")[0])
    parser.add_argument("--record", action="store_true", help="write stage_code.json from the current code")
    args = parser.parse_args(argv)
    if args.record:
        RECORD.write_text(json.dumps({k: {"version": STAGE_VERSIONS[k], "code": code_fingerprint(k)}
                                      for k in STAGE_VERSIONS}, indent=2, sort_keys=True) + "\n")
        print(f"recorded {RECORD}")
        return 0
    lines = stale()
    print("\n".join(lines) if lines else "every stage's code is as recorded")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
