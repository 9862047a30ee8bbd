"""AdamW with decoupled weight decay on the matrices only, and the learning-rate schedules.

Schedules are plain functions of the optimizer step (0-based: the rate used by the step that makes
update ``step + 1``), so a resumed run needs nothing but the step to continue on the same curve.

- warmup: ``lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first update is not 0).
- cosine: ``min + (lr - min) * (1 + cos(pi * t)) / 2``, ``t = (step - warmup) / (max_steps - warmup)``.
- wsd (warmup-stable-decay): ``lr`` until the last ``decay_fraction`` of the steps, then linear to
  ``min``: ``lr - (lr - min) * (step - start) / (max_steps - start)``, ``start = max_steps - round(
  decay_fraction * max_steps)`` (never before the warmup ends).
- constant: ``lr`` after warmup.

``min = lr * min_lr_ratio``. ``t`` reaches ``(max_steps - 1 - warmup) / (max_steps - warmup)`` on the
last step, so the last update still has a rate above ``min`` (Megatron's convention).
"""

from __future__ import annotations

import math

import torch

from train.config import OptimizerConfig, ScheduleConfig


def lr_at(step: int, peak: float, sched: ScheduleConfig, max_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based)."""
    warm = sched.warmup_steps
    if step < warm:
        return peak * (step + 1) / warm
    low = peak * sched.min_lr_ratio
    if sched.kind == "constant":
        return peak
    if sched.kind == "cosine":
        t = min(1.0, (step - warm) / max(1, max_steps - warm))
        return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * t))
    start = max(warm, max_steps - round(sched.decay_fraction * max_steps))
    if step < start:
        return peak
    return peak - (peak - low) * min(1.0, (step - start) / max(1, max_steps - start))


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights and biases (1-D) and the token embeddings get no weight decay."""
    return param.ndim < 2 or "tok_embeddings" in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if no_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": plain, "weight_decay": 0.0, "name": "no_decay"}]


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig, device_type: str = "cpu") -> torch.optim.AdamW:
    """AdamW over the two groups; fused kernels on CUDA, foreach on CPU (both work with DTensors)."""
    kw = {"fused": True} if device_type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                             eps=cfg.eps, **kw)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
