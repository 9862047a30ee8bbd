"""The training YAML: pydantic models, one per section, and the loader.

A training config::

    plan: ../../out/demo-plan          # a `smelter mix` plan folder (relative paths: to this file)
    model: {preset: small}             # a train.model preset plus ModelConfig overrides
    parallel: {dp: -1, tp: 1}          # train.parallel.ParallelConfig
    optimizer: {lr: 3e-3, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1}
    schedule: {warmup_steps: 20, kind: cosine, min_lr_ratio: 0.1}   # or wsd (decay_fraction) / constant
    batch: {global_batch_size: 16, micro_batch_size: 8}
    max_steps: 300
    grad_clip: 1.0
    checkpoint: {dir: ../../out/demo-train, every: 100, keep_last: 2}
    log: {every: 10}                   # metrics.jsonl in log.dir (default: checkpoint.dir)
    eval: {every: 100, batches: 4}     # held-out loss per source, `batches` micro-batches each
    device: auto                       # auto | cpu | cuda
    dtype: fp32                        # fp32 | bf16
    seed: 0

Errors name the file, the line and the dotted key in one line, as the pipeline and mixture loaders do
(the same locator). The model's ``vocab_size`` is not a key: it comes from the plan's tokenizer, and
``max_seq_len`` defaults to the plan's ``seq_len``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.spec import _Ctx, _did_you_mean, _pydantic_message, parse_yaml, read_yaml_file

#: dense peak FLOP/s per device kind at bf16 (fp32 runs count half: the TF32 tensor-core rate)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(_Section):
    """AdamW. Weight decay applies to matrices only: not to norms, biases or the token embeddings."""

    lr: float = Field(3e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.1, ge=0)


class ScheduleConfig(_Section):
    """Linear warmup, then cosine decay, WSD (warmup-stable-decay, linear decay over the last
    ``decay_fraction`` of the steps) or a constant rate; decays end at ``min_lr_ratio * lr``."""

    warmup_steps: int = Field(0, ge=0)
    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0, le=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)


class BatchConfig(_Section):
    """Samples per optimizer step (all ranks) and per forward pass (one rank): gradient accumulation
    is ``global_batch_size / (micro_batch_size * dp)``."""

    global_batch_size: int = Field(ge=1)
    micro_batch_size: int = Field(ge=1)


class CheckpointConfig(_Section):
    dir: str
    every: int = Field(0, ge=0)  # 0: only at the end
    keep_last: int = Field(2, ge=1)


class LogConfig(_Section):
    dir: str | None = None  # default: checkpoint.dir
    every: int = Field(1, ge=1)
    tensorboard: bool = True  # when the tensorboard package is installed


class EvalConfig(_Section):
    every: int = Field(0, ge=0)  # 0: only at the end
    batches: int = Field(4, ge=1)  # micro-batches of held-out samples per source (fewer if it has fewer)


class TrainConfig(_Section):
    plan: str
    model: dict[str, Any] = Field(default_factory=lambda: {"preset": "small"})
    parallel: dict[str, Any] = Field(default_factory=dict)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    batch: BatchConfig
    max_steps: int = Field(ge=1)
    grad_clip: float = Field(1.0, ge=0)  # 0: no clipping (the norm is still logged)
    checkpoint: CheckpointConfig
    log: LogConfig = LogConfig()
    eval: EvalConfig = EvalConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["fp32", "bf16"] = "fp32"
    peak_flops: float | None = Field(None, gt=0)  # per device, for MFU; default from the device kind
    seed: int = 0
    origin: str = "<string>"

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.schedule.warmup_steps > self.max_steps:
            raise ValueError(f"schedule.warmup_steps {self.schedule.warmup_steps} exceeds max_steps {self.max_steps}")
        return self

    # ----------------------------------------------------------------------------------------------
    # what the trainer builds from it

    def build_model_config(self, vocab_size: int, seq_len: int):
        """The train.model.ModelConfig: the preset, the overrides, the plan's vocabulary and length."""
        from train.model import ModelConfig

        over = {k: v for k, v in self.model.items() if k != "preset"}
        over.setdefault("max_seq_len", seq_len)
        return ModelConfig.preset(self.model.get("preset", "small"), vocab_size=vocab_size, **over)

    def parallel_config(self):
        from train.parallel import ParallelConfig

        values = dict(self.parallel)
        if "mixed_precision" in _fields(ParallelConfig):
            values.setdefault("mixed_precision", self.dtype)
        if isinstance(ParallelConfig, type) and issubclass(ParallelConfig, BaseModel):
            return ParallelConfig.model_validate(values)
        return ParallelConfig(**values)

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())


def _fields(cls) -> list[str]:
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    return [f.name for f in dataclasses.fields(cls)]


def _check_model(cfg: TrainConfig, ctx: _Ctx) -> None:
    from train.model import ModelConfig

    known = [f for f in _fields(ModelConfig) if f != "vocab_size"]
    for key in cfg.model:
        if key == "vocab_size":
            raise ctx.fail(("model", key), "set by the plan's tokenizer, not here")
        if key != "preset" and key not in known:
            raise ctx.fail(("model", key), f"unknown key{_did_you_mean(str(key), known + ['preset'])}")
    try:
        cfg.build_model_config(vocab_size=256, seq_len=cfg.model.get("max_seq_len", 128))
    except (KeyError, ValueError, TypeError) as e:
        key = ("model", "preset") if "preset" in str(e) or isinstance(e, KeyError) else ("model",)
        raise ctx.fail(key, str(e).strip("'\"")) from None


def _check_parallel(cfg: TrainConfig, ctx: _Ctx) -> None:
    from train.parallel import ParallelConfig

    known = _fields(ParallelConfig)
    for key in cfg.parallel:
        if key not in known:
            raise ctx.fail(("parallel", key), f"unknown key{_did_you_mean(str(key), known)}")
    try:
        cfg.parallel_config()
    except ValidationError as e:
        loc, msg = _pydantic_message(e)
        raise ctx.fail(("parallel",) + loc, msg) from None
    except (ValueError, TypeError) as e:
        raise ctx.fail(("parallel",), str(e)) from None


def validate(cls: type[BaseModel], data: dict, ctx: _Ctx):
    """``cls(**data)`` (a training or post-training config), its errors as one line naming the YAML line,
    with a "did you mean" for an unknown key."""
    try:
        return cls(**data, origin=ctx.origin)
    except ValidationError as e:
        loc, msg = _pydantic_message(e)
        if msg == "unknown key" and loc:
            owner = cls if len(loc) == 1 else cls.model_fields[loc[0]].annotation
            if isinstance(owner, type) and issubclass(owner, BaseModel):
                msg += _did_you_mean(str(loc[-1]), [k for k in owner.model_fields if k != "origin"])
        raise ctx.fail(loc, msg.removeprefix("Value error, ")) from None
    except TypeError as e:
        raise ctx.fail((), str(e)) from None


def _parse(data: Any, ctx: _Ctx, base: Path) -> TrainConfig:
    if not isinstance(data, dict):
        raise ctx.fail((), "a training config is a mapping with plan, model, batch, max_steps, checkpoint")
    for key in ("model", "parallel"):
        if key in data and not isinstance(data[key], dict):
            raise ctx.fail((key,), f"must be a mapping, got {type(data[key]).__name__}")
    cfg = validate(TrainConfig, data, ctx)
    _check_model(cfg, ctx)
    _check_parallel(cfg, ctx)

    def resolve(p: str) -> str:
        return p if Path(p).is_absolute() else str((base / p).resolve())

    cfg.plan = resolve(cfg.plan)
    cfg.checkpoint.dir = resolve(cfg.checkpoint.dir)
    cfg.log.dir = resolve(cfg.log.dir) if cfg.log.dir else cfg.checkpoint.dir
    return cfg


def load_text(text: str, origin: str = "<string>", overrides: list[str] | tuple[str, ...] = (),
              base: Path | None = None) -> TrainConfig:
    data, ctx = parse_yaml(text, origin, overrides)
    return _parse(data, ctx, base or Path.cwd())


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read and check a training YAML; relative paths in it resolve against its folder."""
    text = read_yaml_file(path, "training config")
    return load_text(text, str(path), overrides, base=Path(path).resolve().parent)


def default_peak_flops(device: str, dtype: str) -> float:
    """Peak FLOP/s of one device for MFU when the config does not set ``peak_flops``.

    GPUs: the dense bf16 tensor-core rate of the device kind (H100/H200 989e12), half of it for fp32
    (TF32). CPU: an estimate, cores x 2.5 GHz x 32 fp32 FLOP/cycle (two AVX2 FMA units), so CPU MFU is
    a rough figure."""
    if device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), 989e12)
        return peak if dtype == "bf16" else peak / 2
    import os

    return (os.cpu_count() or 1) * 2.5e9 * 32
