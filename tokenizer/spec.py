"""The tokenizer spec ``smelter tokenize --tokenizer SPEC`` takes.

SPEC is one of:

* a YAML file (``*.yaml`` / ``*.yml``) holding the spec below;
* an inline YAML mapping, e.g. ``--tokenizer '{train: {vocab_size: 32000}}'``;
* a path to a pretrained tokenizer (file or folder), short for ``{pretrained: PATH}``.

The spec, one of ``train`` or ``pretrained``::

    train:                        # byte-level BPE trained with HF tokenizers on a sample of the run
      vocab_size: 32000           # including the special tokens
      sample_docs: 20000          # documents drawn across all sources (smallest hash of their ids)
      min_frequency: 2            # a pair seen fewer times is never merged
      special_tokens: [...]       # default: end of document, pad, chat roles, end of turn
      max_doc_chars: 200000       # a sampled document is cut to this many characters
      seed: 0                     # changes which documents are sampled
    pretrained: PATH              # tokenizer.json; vocab.json + merges.txt; encoder.json + vocab.bpe;
                                  # a tiktoken ranks file (or the folder holding one of these)
    pattern: gpt2                 # split pattern of a tiktoken ranks file: gpt2, cl100k or a regex
    special_tokens: [...]         # added to a pretrained tokenizer if missing (same default)
    eod: "<|endoftext|>"          # the token appended to every document
    engine: auto                  # auto (tiktoken when it gives HF's ids), tiktoken or hf

Relative paths in a YAML file are relative to that file.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.errors import UserError
from tokenizer.bpe import DEFAULT_EOD, DEFAULT_SPECIAL_TOKENS


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(32000, ge=300, le=2**31 - 1)
    sample_docs: int = Field(20000, ge=1)
    min_frequency: int = Field(2, ge=1)
    special_tokens: list[str] | None = None
    max_doc_chars: int = Field(200_000, ge=1)
    seed: int = 0


class TokenizerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: TrainSpec | None = None
    pretrained: str | None = None
    pattern: str = "gpt2"
    special_tokens: list[str] | None = None
    eod: str = DEFAULT_EOD
    engine: Literal["auto", "tiktoken", "hf"] = "auto"

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.train is None) == (self.pretrained is None):
            raise ValueError("give exactly one of `train:` or `pretrained:`")
        if self.train is not None and self.train.special_tokens is not None and self.special_tokens is not None:
            raise ValueError("special_tokens given twice (top level and under train:)")
        return self

    def specials(self) -> list[str]:
        """The special tokens, the EOD token first."""
        chosen = self.special_tokens
        if chosen is None and self.train is not None:
            chosen = self.train.special_tokens
        if chosen is None:
            chosen = DEFAULT_SPECIAL_TOKENS
        return list(dict.fromkeys([self.eod, *chosen]))

    def describe(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def parse(value: str) -> TokenizerSpec:
    """Turn the ``--tokenizer`` argument into a spec (see the module docstring)."""
    origin = "--tokenizer"
    base = "."
    text = value.strip()
    if text.startswith("{"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"--tokenizer: not a YAML mapping: {str(e).splitlines()[0]}") from None
    elif value.endswith((".yaml", ".yml")):
        if not os.path.isfile(value):
            raise UserError(f"{value}: no such tokenizer spec file")
        try:
            with open(value, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError) as e:
            raise UserError(f"{value}: cannot read the tokenizer spec: {str(e).splitlines()[0]}") from None
        origin, base = value, os.path.dirname(os.path.abspath(value))
    elif os.path.exists(value):
        data = {"pretrained": value}
    else:
        raise UserError(f"--tokenizer {value}: neither a spec file (.yaml), an inline mapping ('{{train: ...}}') "
                        "nor an existing tokenizer file or folder")
    if not isinstance(data, dict):
        raise UserError(f"{origin}: the tokenizer spec must be a mapping with `train:` or `pretrained:`")
    try:
        spec = TokenizerSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        raise UserError(f"{origin}: {where}: {err['msg']}") from None
    if spec.pretrained is not None:
        spec.pretrained = os.path.abspath(os.path.join(base, os.path.expanduser(spec.pretrained)))
        if not os.path.exists(spec.pretrained):
            raise UserError(f"{origin}: pretrained: {spec.pretrained}: no such file or folder")
    if spec.train is not None and spec.train.vocab_size < 256 + len(spec.specials()) + 1:
        raise UserError(f"{origin}: train.vocab_size: {spec.train.vocab_size} leaves no room for merges "
                        f"(256 bytes + {len(spec.specials())} special tokens)")
    return spec
