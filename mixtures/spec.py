"""The mixture YAML that ``smelter mix`` reads: which tokens, how many, in which phases and weights.

::

    name: demo
    tokens: [../../out/mix-tokens/tokens.json]   # one or more `smelter tokenize` manifests
    seq_len: 256                  # a sample is seq_len + 1 tokens (inputs and shifted labels)
    budget_tokens: 4M             # training tokens in all (K, M, B, T suffixes allowed)
    seed: 1234
    max_epochs: 4                 # cap on passes over any document: one number, or {source: number}
    heldout: 0.01                 # share of each source's documents kept out of training, for evaluation
    phases:                       # in training order
      - name: main
        share: 0.8                # of the budget; shares sum to 1
        weights: {web: 0.3, code: 0.2, books: 0.5}      # per source; sum to 1
      - name: anneal
        share: 0.2
        where: quality_score >= 0.5                      # only documents in this bucket, all sources
        weights:
          books: 0.7
          web: {weight: 0.3, where: quality_score >= 0.3}  # a source's own bucket
    output: out/demo-plan         # default for --output

``where`` is ``COLUMN OP NUMBER`` joined by ``and`` (OP one of >=, >, <=, <, ==, !=), on a numeric
column of the pipeline run's shards (``quality_score``, ``lang_score``, ...). Relative paths are
relative to the YAML file. Errors name the file, line and key, with the numbers that broke the rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from pipelines.errors import UserError
from pipelines.spec import _Ctx, _did_you_mean, _pydantic_message, parse_yaml, read_yaml_file

#: default cap on repetition: up to about 4 epochs, repeated tokens are worth nearly as much as new
#: ones (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models")
DEFAULT_MAX_EPOCHS = 4.0
WEIGHT_TOLERANCE = 1e-6
_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
        "!=": operator.ne}
_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.value:g}"

    def apply(self, values):
        return _OPS[self.op](values, self.value)


def parse_where(text: str) -> list[Condition]:
    """``"quality_score >= 0.5 and lang_score > 0.8"`` -> conditions; ValueError with the reason."""
    conditions = []
    for part in re.split(r"\s+and\s+", text.strip()):
        m = _CONDITION.match(part)
        if not m:
            raise ValueError(f"cannot read {part!r}: expected COLUMN OP NUMBER (OP: >=, >, <=, <, ==, !=), "
                             "joined by 'and'")
        conditions.append(Condition(m.group(1), m.group(2), float(m.group(3))))
    return conditions


def parse_tokens(value: Any) -> int:
    """A token count: 4000000, 4e6, "4M", "2.5B"."""
    if isinstance(value, bool):
        raise ValueError("expected a number of tokens")
    if isinstance(value, (int, float)):
        n = value
    elif isinstance(value, str):
        s = value.strip().replace("_", "").replace(",", "")
        mult = _SUFFIXES.get(s[-1:].lower(), 1)
        try:
            n = float(s[:-1] if mult != 1 else s) * mult
        except ValueError:
            raise ValueError(f"cannot read {value!r} as a number of tokens (e.g. 4000000, 4M, 2.5B)") from None
    else:
        raise ValueError("expected a number of tokens")
    if not math.isfinite(n) or n <= 0 or n != int(n):
        raise ValueError(f"{value!r}: expected a positive whole number of tokens")
    return int(n)


class SourceWeight(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float = Field(gt=0)
    where: str | None = None


class PhaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    share: float = Field(gt=0, le=1)
    weights: dict[str, SourceWeight] = Field(min_length=1)
    where: str | None = None

    @field_validator("weights", mode="before")
    @classmethod
    def _bare_numbers(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ({"weight": w} if isinstance(w, (int, float)) and not isinstance(w, bool) else w)
                    for k, w in v.items()}
        return v


class MixtureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    tokens: list[str] = Field(min_length=1)
    seq_len: int = Field(ge=2, le=2**24)
    budget_tokens: int
    seed: int = Field(0, ge=0, lt=2**32)
    max_epochs: float | dict[str, float] = DEFAULT_MAX_EPOCHS
    heldout: float = Field(0.01, ge=0, lt=0.5)
    phases: list[PhaseSpec] = Field(min_length=1)
    output: str | None = None
    #: where the YAML came from (not a YAML key)
    origin: str = Field("<string>", exclude=True)
    _ctx: Any = PrivateAttr(None)

    @field_validator("tokens", mode="before")
    @classmethod
    def _one_or_more(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("budget_tokens", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> int:
        return parse_tokens(v)

    def cap(self, source: str) -> float:
        if isinstance(self.max_epochs, dict):
            return float(self.max_epochs.get(source, DEFAULT_MAX_EPOCHS))
        return float(self.max_epochs)

    def where(self, phase: PhaseSpec, source: str) -> list[Condition]:
        text = phase.weights[source].where or phase.where
        return parse_where(text) if text else []

    def config_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        blob = json.dumps(self.config_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _parse(data: Any, ctx: _Ctx, base: Path) -> MixtureSpec:
    if not isinstance(data, dict):
        raise ctx.fail((), "a mixture is a mapping with name, tokens, seq_len, budget_tokens, phases")
    try:
        spec = MixtureSpec(**data, origin=ctx.origin)
    except ValidationError as e:
        loc, msg = _pydantic_message(e)
        if loc and loc[0] == "max_epochs" and len(loc) > 1 and loc[1] in ("float", "dict[str,float]"):
            loc = ("max_epochs",)
        raise ctx.fail(loc, msg) from None
    except TypeError as e:
        raise ctx.fail((), str(e)) from None
    spec.tokens = [str((base / p).resolve()) if not Path(p).is_absolute() else p for p in spec.tokens]
    if spec.output and not Path(spec.output).is_absolute():
        spec.output = str((base / spec.output).resolve())
    total = sum(p.share for p in spec.phases)
    if abs(total - 1) > WEIGHT_TOLERANCE:
        shares = " + ".join(f"{p.name} {p.share:g}" for p in spec.phases)
        raise ctx.fail(("phases",), f"phase shares sum to {total:g}, not 1 ({shares})")
    names = [p.name for p in spec.phases]
    for i, phase in enumerate(spec.phases):
        if names.index(phase.name) != i:
            raise ctx.fail(("phases", i, "name"), f"phase name {phase.name!r} is used twice")
        total = sum(w.weight for w in phase.weights.values())
        if abs(total - 1) > WEIGHT_TOLERANCE:
            parts = " + ".join(f"{s} {w.weight:g}" for s, w in phase.weights.items())
            raise ctx.fail(("phases", i, "weights"), f"phase {phase.name}: weights sum to {total:g}, not 1 ({parts})")
        for key, text in [(("phases", i, "where"), phase.where)] + [
                (("phases", i, "weights", s, "where"), w.where) for s, w in phase.weights.items()]:
            if text is not None:
                try:
                    parse_where(text)
                except ValueError as e:
                    raise ctx.fail(key, str(e)) from None
    caps = spec.max_epochs.values() if isinstance(spec.max_epochs, dict) else [spec.max_epochs]
    if any(not c > 0 for c in caps):
        raise ctx.fail(("max_epochs",), "a cap on epochs must be above 0")
    return spec


def check_sources(spec: MixtureSpec, known: list[str]) -> None:
    """Every source a phase or ``max_epochs`` names is in the token manifests (one-line error if not)."""
    def fail(path, message):
        return fail_at(spec, path, message)

    for i, phase in enumerate(spec.phases):
        for source in phase.weights:
            if source not in known:
                raise fail(("phases", i, "weights", source),
                           f"phase {phase.name}: unknown source {source!r}{_did_you_mean(source, known)}")
    if isinstance(spec.max_epochs, dict):
        for source in spec.max_epochs:
            if source not in known:
                raise fail(("max_epochs", source), f"unknown source {source!r}{_did_you_mean(source, known)}")


def fail_at(spec: MixtureSpec, path: tuple[Any, ...], message: str) -> UserError:
    """A one-line error pointing at ``path`` in the mixture's YAML (file:line when known)."""
    return spec._ctx.fail(path, message) if spec._ctx else UserError(f"{spec.origin}: {message}")


def load_text(text: str, origin: str = "<string>", overrides: list[str] | tuple[str, ...] = (),
              base: Path | None = None) -> MixtureSpec:
    data, ctx = parse_yaml(text, origin, overrides)
    spec = _parse(data, ctx, base or Path.cwd())
    spec._ctx = ctx
    return spec


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> MixtureSpec:
    text = read_yaml_file(path, "mixture file")
    return load_text(text, str(path), overrides, base=Path(path).resolve().parent)
