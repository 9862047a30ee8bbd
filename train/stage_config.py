"""The post-training YAML (SFT, DPO, reward model, GRPO): pydantic models and the loader.

A stage config::

    stage: sft                              # sft | dpo | reward | grpo (checked against the module run)
    init_from: ../../out/demo-train         # the previous stage's checkpoint (a step-N folder or a root)
    tokenizer: null                         # default: from init_from's trainer_state (train.chat)
    data: {train: data/train/sft.jsonl, heldout: data/heldout/sft.jsonl,
           heldout_prompts: data/heldout/prompts.jsonl}
    max_len: null                           # longest example in tokens (default: the model's max_seq_len)
    parallel: {dp: -1, tp: 1}
    optimizer: {lr: 1e-3, weight_decay: 0.0}
    schedule: {warmup_steps: 10, kind: cosine, min_lr_ratio: 0.1}
    batch: {global_batch_size: 16, micro_batch_size: 8}
    max_steps: 200
    grad_clip: 1.0
    checkpoint: {dir: ../../out/sft, every: 0, keep_last: 1}
    log: {every: 10}
    eval: {every: 100, max_examples: 200, at_start: false, max_new_tokens: 32}
    device: auto
    dtype: fp32
    seed: 0
    sft: {packing: true}
    dpo: {beta: 0.1}
    reward: {}
    grpo: {...}                             # train.grpo.GRPOSection

Relative paths resolve against the YAML's folder; errors are one line with the file, line and dotted key,
like the pretraining config (train/config.py, whose optimizer / schedule / batch / checkpoint / log
sections are reused here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from pipelines.spec import _Ctx, _did_you_mean, _pydantic_message, parse_yaml, read_yaml_file
from train.config import (
    BatchConfig,
    CheckpointConfig,
    LogConfig,
    OptimizerConfig,
    ScheduleConfig,
    _fields,
    _Section,
    validate,
)

STAGES = ("sft", "dpo", "reward", "grpo")


class DataConfig(_Section):
    """JSONL files: ``train`` (required), ``heldout`` (same format, for held-out loss / accuracy) and
    ``heldout_prompts`` (prompts.jsonl rows with answers, for exact-match accuracy by greedy generation)."""

    train: str
    heldout: str | None = None
    heldout_prompts: str | None = None


class StageEvalConfig(_Section):
    every: int = Field(0, ge=0)  # 0: only at the end
    max_examples: int = Field(200, ge=1)  # held-out rows / pairs / prompts per evaluation
    at_start: bool = False  # also evaluate before the first step (the "before" figure), logged as step 0
    max_new_tokens: int = Field(32, ge=1)  # greedy generation for exact-match accuracy


class SFTSection(_Section):
    packing: bool = True  # pack short conversations into full rows (block-diagonal attention)


class DPOSection(_Section):
    beta: float = Field(0.1, gt=0)
    # weight of the chosen reply's per-token negative log-likelihood added to each pair's loss (RPO,
    # Pang et al. 2024); 0 = plain DPO, whose likelihoods of both replies may fall together
    sft_weight: float = Field(0.0, ge=0)


class RewardSection(_Section):
    # where the scalar is read: "last" = the head's value at the reply's last token (<|end_of_turn|>);
    # "mean" = the mean of the head's values over the reply's tokens; "token" = a head with one value per
    # vocabulary entry, read for each reply token at the position before it, averaged (see train/reward.py)
    pool: Literal["last", "mean", "token"] = "last"


class StageConfig(_Section):
    stage: Literal["sft", "dpo", "reward", "grpo"] | None = None
    init_from: str
    tokenizer: str | None = None
    data: DataConfig
    max_len: int | None = Field(None, ge=2)
    parallel: dict[str, Any] = Field(default_factory=dict)
    optimizer: OptimizerConfig = OptimizerConfig(lr=1e-4, weight_decay=0.0)
    schedule: ScheduleConfig = ScheduleConfig()
    batch: BatchConfig
    max_steps: int = Field(ge=1)
    grad_clip: float = Field(1.0, ge=0)
    checkpoint: CheckpointConfig
    log: LogConfig = LogConfig()
    eval: StageEvalConfig = StageEvalConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0
    sft: SFTSection = SFTSection()
    dpo: DPOSection = DPOSection()
    reward: RewardSection = RewardSection()
    grpo: Any = None  # train.grpo.GRPOSection, validated in _parse (train/grpo.py owns its fields)
    origin: str = "<string>"

    @model_validator(mode="after")
    def _check(self) -> StageConfig:
        if self.schedule.warmup_steps > self.max_steps:
            raise ValueError(f"schedule.warmup_steps {self.schedule.warmup_steps} exceeds max_steps {self.max_steps}")
        return self

    def parallel_config(self):
        from train.parallel import ParallelConfig

        values = dict(self.parallel)
        values.setdefault("mixed_precision", self.dtype)
        return ParallelConfig(**values)

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"grpo"})
        grpo = self.grpo
        data["grpo"] = grpo.model_dump(mode="json") if isinstance(grpo, BaseModel) else grpo
        return json.loads(json.dumps(data))


def _grpo_section(value: Any, ctx: _Ctx) -> Any:
    """The grpo section as train.grpo.GRPOSection (its owner defines the fields)."""
    try:
        from train.grpo import GRPOSection
    except ImportError:
        return value
    if value is not None and not isinstance(value, dict):
        raise ctx.fail(("grpo",), f"must be a mapping, got {type(value).__name__}")
    try:
        return GRPOSection.model_validate(value or {})
    except ValidationError as e:
        loc, msg = _pydantic_message(e)
        if msg == "unknown key" and loc:
            msg += _did_you_mean(str(loc[-1]), list(GRPOSection.model_fields))
        raise ctx.fail(("grpo",) + loc, msg.removeprefix("Value error, ")) from None


def _parse(data: Any, ctx: _Ctx, base: Path) -> StageConfig:
    if not isinstance(data, dict):
        raise ctx.fail((), "a post-training config is a mapping with init_from, data, batch, max_steps, checkpoint")
    if "parallel" in data and not isinstance(data["parallel"], dict):
        raise ctx.fail(("parallel",), f"must be a mapping, got {type(data['parallel']).__name__}")
    cfg = validate(StageConfig, data, ctx)
    from train.parallel import ParallelConfig

    known = _fields(ParallelConfig)
    for key in cfg.parallel:
        if key not in known:
            raise ctx.fail(("parallel", key), f"unknown key{_did_you_mean(str(key), known)}")
    try:
        cfg.parallel_config()
    except (ValueError, TypeError) as e:
        raise ctx.fail(("parallel",), str(e)) from None
    if cfg.stage == "grpo" or cfg.grpo is not None:
        cfg.grpo = _grpo_section(cfg.grpo, ctx)

    def resolve(p: str) -> str:
        return p if Path(p).is_absolute() else str((base / p).resolve())

    cfg.init_from = resolve(cfg.init_from)
    if cfg.tokenizer:
        cfg.tokenizer = resolve(cfg.tokenizer)
    cfg.data.train = resolve(cfg.data.train)
    if cfg.data.heldout:
        cfg.data.heldout = resolve(cfg.data.heldout)
    if cfg.data.heldout_prompts:
        cfg.data.heldout_prompts = resolve(cfg.data.heldout_prompts)
    cfg.checkpoint.dir = resolve(cfg.checkpoint.dir)
    cfg.log.dir = resolve(cfg.log.dir) if cfg.log.dir else cfg.checkpoint.dir
    return cfg


def load_text(text: str, origin: str = "<string>", overrides: list[str] | tuple[str, ...] = (),
              base: Path | None = None) -> StageConfig:
    data, ctx = parse_yaml(text, origin, overrides)
    return _parse(data, ctx, base or Path.cwd())


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StageConfig:
    """Read and check a post-training YAML; relative paths in it resolve against its folder."""
    text = read_yaml_file(path, "post-training config")
    return load_text(text, str(path), overrides, base=Path(path).resolve().parent)


def peek_stage(path: str | Path) -> str | None:
    """The ``stage`` key of a YAML file, if it has one (``smelter train --config`` dispatches on it)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    stage = data.get("stage") if isinstance(data, dict) else None
    return stage if stage in STAGES else None
