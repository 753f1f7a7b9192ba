"""The one command-line syntax for a data source, with its format, column map and label map.

    blindspot evaluate CLF --set snli=dev.csv:premise=sentence1,hypothesis=sentence2,label=gold,labels=0:entailment/1:neutral/2:contradiction --out OUT
    blindspot data describe anli=@anli.yaml

Every command that takes a data source (`evaluate --set`, `audit`, `data describe`, `filter`,
`train-classifier --data`, ...) reads it with `parse_source_text`:

    [NAME=]PATH[:KEY=VALUE,KEY=VALUE...]      a file, plain or .gz
    [NAME=]hub:ID:SPLIT[:KEY=VALUE,...]        a Hugging Face dataset split
    [NAME=]@SOURCE.yaml                        a YAML / JSON file holding one source mapping,
                                               with the keys of a config's data source

KEYs: `format` (mnli | hans | nli); the column of each field, `premise`, `hypothesis`, `label`,
`id`, `genre`, `heuristic`, `subcase`, `template`; `labels` (the label map, RAW:LABEL pairs
joined by `/`, e.g. `0:entailment/1:neutral/2:contradiction`; `RAW:` with nothing after drops
those rows); `label_space` (allowed labels joined by `/`); `name`, `split`, `config`,
`keep_no_gold` (true / false). A column map or label map means format nli. Options start at the
first `:` followed by `KEY=`; a column name holding `,` `/` or `:` needs the @file form.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ValidationError

from blindspot.data.generic import FIELDS
from blindspot.errors import ConfigError

SOURCE_SYNTAX = ("PATH or hub:ID:SPLIT, optionally followed by :KEY=VALUE,... (format=nli, premise=COL, "
                 "hypothesis=COL, label=COL, id=COL, labels=RAW:LABEL/RAW:LABEL, ...), or @SOURCE.yaml; "
                 "see README 'Your own data'")
OPTION_KEYS = ("format", *FIELDS, "labels", "label_space", "name", "split", "config", "keep_no_gold")
_OPTIONS_START = re.compile(r":(?=[A-Za-z_]+=)")
_NAME = re.compile(r"^([A-Za-z0-9_.+-]+)=(?=.)")


def split_name(text: str) -> tuple[str | None, str]:
    """'NAME=SOURCE' -> (NAME, SOURCE); a bare source -> (None, SOURCE)."""
    m = _NAME.match(text)  # a bare 'dev.csv:premise=s1' does not match: ':' is not a name character
    if m:
        return m.group(1), text[m.end():]
    return None, text


def parse_label_map(text: str, where: str) -> dict[str, str | None]:
    """'0:entailment/1:neutral' (or '0=entailment,1=neutral') -> {'0': 'entailment', '1': 'neutral'}."""
    out: dict[str, str | None] = {}
    for item in re.split(r"[/,]", text):
        raw, sep, label = item.partition(":" if ":" in item else "=")
        if not sep or not raw.strip():
            raise ConfigError(f"{where}: label map item {item!r} is not RAW:LABEL "
                              "(expected e.g. labels=0:entailment/1:neutral/2:contradiction)")
        out[raw.strip()] = label.strip() or None
    return out


def _option_value(key: str, value: str, where: str):
    if key == "labels":
        return parse_label_map(value, where)
    if key == "label_space":
        return [x.strip() for x in value.split("/") if x.strip()]
    if key == "keep_no_gold":
        if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ConfigError(f"{where}: keep_no_gold={value!r}: expected true or false")
        return value.lower() in ("true", "yes", "1")
    return value


def _options(text: str, where: str) -> dict:
    """'format=nli,premise=s1,labels=0:entailment/1:neutral' -> DataSource fields."""
    fields: dict = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise ConfigError(f"{where}: option {item!r} is not KEY=VALUE (keys: {', '.join(OPTION_KEYS)})")
        if key not in OPTION_KEYS:
            raise ConfigError(f"{where}: unknown option {key!r} (expected one of {', '.join(OPTION_KEYS)})")
        if key in FIELDS:
            fields.setdefault("columns", {})[key] = value.strip()
        else:
            fields[key] = _option_value(key, value.strip(), where)
    return fields


def _source_file(path: str, where: str) -> dict:
    """The mapping in a @SOURCE.yaml / .json file."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{where}: no such source file {p} (expected a YAML/JSON mapping with path or hub, "
                          "format, columns, labels)")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of source fields (path, format, columns, labels, ...), "
                          f"got {type(raw).__name__}")
    return raw


def _validated(fields: dict, where: str):
    """A DataSource from a mapping of its fields; one ConfigError naming the first bad field."""
    from blindspot.data.sources import DataSource

    if isinstance(fields.get("labels"), dict):  # YAML reads `0: entailment` with an int key
        fields = {**fields, "labels": {str(k): v for k, v in fields["labels"].items()}}
    try:
        return DataSource.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = "unknown field (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{where}: field {loc!r}: {msg}") from None


def parse_source_text(text: str, where: str | None = None):
    """A DataSource from the command-line syntax above (without a NAME= prefix)."""
    where = where or f"source {text!r}"
    if text.startswith("@"):
        return _validated(_source_file(text[1:], where), text[1:])
    m = _OPTIONS_START.search(text)
    base, fields = (text[:m.start()], _options(text[m.end():], where)) if m else (text, {})
    if not base:
        raise ConfigError(f"{where}: no path before the options (expected {SOURCE_SYNTAX})")
    if base.startswith("hub:"):
        hub, _, split = base[4:].rpartition(":") if ":" in base[4:] else (base[4:], "", "")
        fields = {"hub": hub, **({"split": split} if split else {}), **fields}
    else:
        fields = {"path": base, **fields}
    return _validated(fields, where)


def source_from_mapping(raw: dict, where: str = "data source"):
    """A DataSource from a YAML mapping (path or hub, format, columns, labels, ...)."""
    return _validated(dict(raw), where)


def parse_named_source(text: str, option: str = "source"):
    """(NAME or None, DataSource) from `[NAME=]SOURCE`."""
    name, rest = split_name(text)
    return name, parse_source_text(rest, f"{option} {text!r}")


def default_set_name(src) -> str:
    """A set's name when none is given: the file name without extensions, or the hub id's name and split."""
    from blindspot.data.sources import file_stem

    if src.name:
        return src.name
    if src.path is not None:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", file_stem(src.path)) or "set"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(src.hub).name}-{src.split}")


def source_text(src) -> str:
    """The source back in the command-line syntax (a plain path stays the plain path)."""
    base = src.path if src.path is not None else f"hub:{src.hub}:{src.split}"
    opts = [f"format={src.format}"] if src.format else []
    opts += [f"{k}={v}" for k, v in (src.columns or {}).items()]
    if src.labels:
        opts.append("labels=" + "/".join(f"{k}:{v if v is not None else ''}" for k, v in src.labels.items()))
    if src.label_space:
        opts.append("label_space=" + "/".join(src.label_space))
    opts += [f"{k}={getattr(src, k)}" for k in ("name", "config") if getattr(src, k)]
    if src.keep_no_gold:
        opts.append("keep_no_gold=true")
    return base + (":" + ",".join(opts) if opts else "")
