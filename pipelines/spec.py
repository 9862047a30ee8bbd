"""The YAML pipeline schema: pydantic models, one per YAML section, and the loader.

A pipeline::

    name: web-extract
    sources:
      web:
        read: {warc: {paths: "../shared/corpus/web/*.warc.gz"}}
        steps:
          - extract: {engine: trafilatura}
    steps: []                       # global steps over the union of the sources
    output: {path: out/web-extract}

A reader and each step is a one-key mapping from its YAML name to its parameters (``- extract`` alone
means "default parameters"). Loading is ``yaml.safe_load`` for the values plus ``yaml.compose`` for the
line numbers, so every error names the file, the line and the dotted key, in one line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from operators import registry
from operators.base import Params
from pipelines.errors import UserError

SCHEMA_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class OperatorSpec(BaseModel):
    """One reader or step after validation: its YAML name and its typed parameters."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    name: str
    params: Params

    def to_yaml_obj(self) -> dict[str, Any]:
        return {self.name: self.params.model_dump(mode="json")}


class SourceSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    read: OperatorSpec
    steps: list[OperatorSpec] = Field(default_factory=list)


class OutputSpec(BaseModel):
    """Where and how shards are written."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str | None = None  # default: out/<pipeline name>
    compression: str = "zstd"
    batch_rows: int = Field(default=100, ge=1, le=1_000_000)  # rows per Arrow batch in the fused pass
    ledger_text_chars: int = Field(default=300, ge=0)  # head of a dropped text kept in the ledger

    @field_validator("compression")
    @classmethod
    def _known_codec(cls, v: str) -> str:
        if v not in ("zstd", "lz4", "none"):
            raise ValueError("must be one of zstd, lz4, none")
        return v


class PipelineSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    sources: dict[str, SourceSpec]
    steps: list[OperatorSpec] = Field(default_factory=list)
    output: OutputSpec = OutputSpec()
    #: where the YAML came from; relative input paths resolve against the working directory
    origin: str = "<string>"

    def config_dict(self) -> dict[str, Any]:
        """The pipeline as plain data (what the config hash covers: everything but the output path)."""
        return {
            "name": self.name,
            "sources": {
                name: {"read": src.read.to_yaml_obj(), "steps": [s.to_yaml_obj() for s in src.steps]}
                for name, src in self.sources.items()
            },
            "steps": [s.to_yaml_obj() for s in self.steps],
            "output": self.output.model_dump(mode="json", exclude={"path"}),
        }

    def config_hash(self) -> str:
        blob = json.dumps(self.config_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def output_path(self) -> str:
        return self.output.path or f"out/{self.name}"


# --------------------------------------------------------------------------------------------------
# Loading with line numbers


class _Locator:
    """Maps a dotted key path to the line where it stands in the YAML text."""

    def __init__(self, node: yaml.Node | None):
        self.root = node

    def line(self, path: tuple[Any, ...]) -> int | None:
        node, best = self.root, None
        for key in path:
            if node is None:
                break
            best = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for k, v in node.value:
                    if k.value == str(key):
                        best, nxt = k.start_mark.line + 1, v
                        break
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                best = node.start_mark.line + 1
            else:
                node = None
        return best


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top>"


class _Ctx:
    def __init__(self, origin: str, locator: _Locator, overridden: set[tuple[Any, ...]]):
        self.origin, self.locator, self.overridden = origin, locator, overridden

    def fail(self, path: tuple[Any, ...], message: str) -> UserError:
        for k in range(len(path), 0, -1):
            if path[:k] in self.overridden:
                return UserError(f"--set {_dotted(path[:k])}: {_dotted(path)}: {message}")
        line = self.locator.line(path)
        where = f"{self.origin}:{line}" if line else self.origin
        return UserError(f"{where}: {_dotted(path)}: {message}")


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (known: {', '.join(sorted(known))})" if known else ""


def _pydantic_message(err: ValidationError) -> tuple[tuple[Any, ...], str]:
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    msg = first.get("msg", "invalid")
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
    elif first.get("type") == "missing":
        msg = "required key is missing"
    return loc, msg


_KINDS = {"reader": registry.READERS, "step": registry.ROW_STEPS, "global step": registry.GLOBAL_STEPS}


def _operator(ctx: _Ctx, path: tuple[Any, ...], raw: Any, kind: str) -> OperatorSpec:
    table = _KINDS[kind]
    if isinstance(raw, str):
        raw = {raw: None}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ctx.fail(path, f"a {kind} is a one-key mapping `NAME: {{params}}`, got {type(raw).__name__}")
    (name, params), = raw.items()
    name = str(name)
    if name not in table:
        hint = _did_you_mean(name, list(table))
        for other, names in _KINDS.items():
            if other != kind and name in names:
                hint = f" ('{name}' is a {other}, not a {kind})"
        raise ctx.fail(path, f"unknown {kind} '{name}'{hint}")
    cls = registry.load(table[name])
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ctx.fail(path + (name,), f"parameters must be a mapping, got {type(params).__name__}")
    try:
        model = cls.Params.model_validate(params)
    except ValidationError as e:
        loc, msg = _pydantic_message(e)
        if msg == "unknown key" and loc:
            known = list(cls.Params.model_fields)
            msg += _did_you_mean(str(loc[-1]), known)
        raise ctx.fail(path + (name,) + loc, msg) from None
    return OperatorSpec(name=name, params=model)


def source_columns(read: OperatorSpec, steps: list[OperatorSpec]) -> list[list[str]]:
    """The columns present after the reader and after each step, in order."""
    cols = ["id", "source", *registry.reader(read.name).produces]
    out = [list(cols)]
    for s in steps:
        cls = registry.row_step(s.name)
        cols = [c for c in cols if c not in cls.consumes] + [c for c in cls.added(s.params) if c not in cols]
        out.append(list(cols))
    return out


def _check_columns(ctx: _Ctx, sname: str, read: OperatorSpec, steps: list[OperatorSpec]) -> None:
    """A step may only read columns that the reader or an earlier step produced."""
    after = source_columns(read, steps)
    for i, s in enumerate(steps):
        missing = [c for c in registry.row_step(s.name).reads if c not in after[i]]
        if missing:
            raise ctx.fail(("sources", sname, "steps", i, s.name),
                           f"reads column '{missing[0]}', which nothing before it produces "
                           f"(available: {', '.join(after[i])})")


def _parse(data: Any, ctx: _Ctx) -> PipelineSpec:
    if not isinstance(data, dict):
        raise ctx.fail((), "a pipeline is a mapping with name, sources, steps and output")
    allowed = {"name", "sources", "steps", "output"}
    for key in data:
        if key not in allowed:
            raise ctx.fail((key,), "unknown key" + _did_you_mean(str(key), sorted(allowed)))
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ctx.fail(("name",), "required: a name of letters, digits, '-', '_' or '.'")
    sources_raw = data.get("sources")
    if not isinstance(sources_raw, dict) or not sources_raw:
        raise ctx.fail(("sources",), "required: a mapping of source names to {read, steps}")
    sources: dict[str, SourceSpec] = {}
    for sname, sraw in sources_raw.items():
        sname = str(sname)
        if not _NAME_RE.match(sname):
            raise ctx.fail(("sources", sname), "a source name is letters, digits, '-', '_' or '.'")
        if not isinstance(sraw, dict):
            raise ctx.fail(("sources", sname), "a source is a mapping with read and steps")
        for key in sraw:
            if key not in ("read", "steps"):
                raise ctx.fail(("sources", sname, key), "unknown key" + _did_you_mean(str(key), ["read", "steps"]))
        if "read" not in sraw:
            raise ctx.fail(("sources", sname), "required key 'read' is missing")
        read = _operator(ctx, ("sources", sname, "read"), sraw["read"], "reader")
        steps_raw = sraw.get("steps") or []
        if not isinstance(steps_raw, list):
            raise ctx.fail(("sources", sname, "steps"), "steps is a list")
        steps = [_operator(ctx, ("sources", sname, "steps", i), s, "step") for i, s in enumerate(steps_raw)]
        _check_columns(ctx, sname, read, steps)
        sources[sname] = SourceSpec(read=read, steps=steps)
    gsteps_raw = data.get("steps") or []
    if not isinstance(gsteps_raw, list):
        raise ctx.fail(("steps",), "steps is a list")
    gsteps = [_operator(ctx, ("steps", i), s, "global step") for i, s in enumerate(gsteps_raw)]
    out_raw = data.get("output") or {}
    try:
        output = OutputSpec.model_validate(out_raw)
    except ValidationError as e:
        loc, msg = _pydantic_message(e)
        if msg == "unknown key" and loc:
            msg += _did_you_mean(str(loc[-1]), list(OutputSpec.model_fields))
        raise ctx.fail(("output",) + loc, msg) from None
    return PipelineSpec(name=name, sources=sources, steps=gsteps, output=output, origin=ctx.origin)


def apply_override(data: dict[str, Any], assignment: str) -> tuple[Any, ...]:
    """Apply one ``--set dotted.key=value`` (value parsed as YAML) and return the key path."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment}: expected dotted.key=value")
    key, value = assignment.split("=", 1)
    parts: list[Any] = [int(p) if p.isdigit() else p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"--set {assignment}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    node: Any = data
    for i, p in enumerate(parts[:-1]):
        nxt_is_index = isinstance(parts[i + 1], int)
        if isinstance(node, list):
            if not isinstance(p, int) or p >= len(node):
                raise UserError(f"--set {key}: index {p} is not in the list at {_dotted(tuple(parts[:i]))}")
            if node[p] is None:
                node[p] = [] if nxt_is_index else {}
            node = node[p]
        elif isinstance(node, dict):
            if node.get(p) is None:
                node[p] = [] if nxt_is_index else {}
            node = node[p]
        else:
            raise UserError(f"--set {key}: {_dotted(tuple(parts[:i]))} is not a mapping")
    last = parts[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last > len(node):
            raise UserError(f"--set {key}: index {last} is not in the list")
        if last == len(node):
            node.append(parsed)
        else:
            node[last] = parsed
    elif isinstance(node, dict):
        node[last] = parsed
    else:
        raise UserError(f"--set {key}: {_dotted(tuple(parts[:-1]))} is not a mapping")
    return tuple(parts)


def parse_yaml(text: str, origin: str, overrides: list[str] | tuple[str, ...] = (),
               default: Any = None) -> tuple[Any, _Ctx]:
    """YAML text -> (its data with the ``--set`` overrides applied, the context that points errors at
    ``origin:line``). Malformed YAML is a one-line error with the line; empty text gives ``default``.
    Shared by every YAML smelter reads: pipelines, mixtures, training configs."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{origin}{line}: malformed YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{origin}: malformed YAML: {e}") from None
    if data is None:
        data = default
    overridden: set[tuple[Any, ...]] = set()
    if isinstance(data, dict):
        for assignment in overrides:
            overridden.add(apply_override(data, assignment))
    return data, _Ctx(origin, _Locator(node), overridden)


def read_yaml_file(path: str | Path, what: str) -> str:
    """The text of a YAML file, or a one-line error naming it (``what``: "pipeline file", ...)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None


def load_text(text: str, origin: str = "<string>", overrides: list[str] | tuple[str, ...] = ()) -> PipelineSpec:
    """Parse and validate a pipeline given as YAML text."""
    data, ctx = parse_yaml(text, origin, overrides, default={})
    return _parse(data, ctx)


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineSpec:
    """Parse and validate a pipeline YAML file."""
    return load_text(read_yaml_file(path, "pipeline file"), str(path), overrides)
