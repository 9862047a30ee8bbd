"""The learning-rate schedules against hand-computed values, and AdamW's weight-decay groups."""

from __future__ import annotations

import math

import pytest
import torch

from train.config import OptimizerConfig, ScheduleConfig
from train.model import ModelConfig, Transformer
from train.optim import build_optimizer, lr_at, param_groups


def test_warmup_then_cosine_hand_values():
    s = ScheduleConfig(warmup_steps=4, kind="cosine", min_lr_ratio=0.1)
    lrs = [lr_at(k, 1.0, s, max_steps=14) for k in range(14)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear, the first step is not 0
    assert lrs[4] == pytest.approx(1.0)  # t = 0
    assert lrs[9] == pytest.approx(0.55)  # t = 5/10: 0.1 + 0.9 * (1 + cos(pi/2)) / 2
    assert lrs[13] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.9)))  # 0.12202...
    assert lrs[13] == pytest.approx(0.122024, abs=1e-6)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lr_at(100, 1.0, s, max_steps=14) == pytest.approx(0.1)  # past the end: the floor


def test_wsd_hand_values():
    s = ScheduleConfig(warmup_steps=2, kind="wsd", decay_fraction=0.25, min_lr_ratio=0.0)
    # 20 steps: decay over the last round(0.25 * 20) = 5 steps, from step 15
    lrs = [lr_at(k, 2.0, s, max_steps=20) for k in range(20)]
    assert lrs[:2] == pytest.approx([1.0, 2.0])
    assert lrs[2:16] == pytest.approx([2.0] * 14)
    assert lrs[16:] == pytest.approx([1.6, 1.2, 0.8, 0.4])  # 2 - 2 * (k - 15) / 5


def test_constant_and_no_warmup():
    s = ScheduleConfig(warmup_steps=0, kind="constant")
    assert [lr_at(k, 3e-4, s, 10) for k in (0, 5, 9)] == [3e-4] * 3
    cos = ScheduleConfig(warmup_steps=0, kind="cosine", min_lr_ratio=0.0)
    assert lr_at(0, 1.0, cos, 10) == pytest.approx(1.0)
    assert lr_at(5, 1.0, cos, 10) == pytest.approx(0.5)


def test_no_decay_on_norms_biases_embeddings():
    model = Transformer(ModelConfig.preset("tiny"))
    decay, plain = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    plain_names = {names[id(p)] for p in plain["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert "tok_embeddings.weight" in plain_names and "norm.weight" in plain_names
    assert {"layers.0.attention_norm.weight", "layers.1.ffn_norm.weight"} <= plain_names
    assert "layers.0.attention.wq.weight" in decay_names and "output.weight" in decay_names
    assert all(p.ndim == 2 for p in decay["params"])
    assert len(plain_names) + len(decay_names) == len(list(model.parameters()))
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0

    # one AdamW step with no gradient signal: decay shrinks the matrices only
    opt = build_optimizer(model, OptimizerConfig(lr=0.1, weight_decay=0.5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    assert torch.equal(after["norm.weight"], before["norm.weight"])
    assert torch.equal(after["tok_embeddings.weight"], before["tok_embeddings.weight"])
    assert torch.allclose(after["output.weight"], before["output.weight"] * (1 - 0.1 * 0.5))
