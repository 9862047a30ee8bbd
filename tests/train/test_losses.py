"""train/losses.py on tiny hand-computed cases, and the model additions post-training relies on
(block-diagonal attention for packed documents, per-token positions, left-padded batched generation,
projecting selected positions only, the value head)."""

from __future__ import annotations

import math

import pytest
import torch

from train.losses import (
    IGNORE_INDEX,
    bradley_terry_loss,
    dpo_loss,
    selected_sequence_logprobs,
    sequence_logprobs,
    sft_loss,
    sft_loss_sum,
    token_logprobs,
)
from train.model import KVCache, ModelConfig, Transformer, generate


def _logits() -> torch.Tensor:
    """One row, three positions, vocabulary of 2: p(token 1) = 3/4, 1/2, 1/4 at positions 0, 1, 2."""
    ln3 = math.log(3)
    return torch.tensor([[[0.0, ln3], [0.0, 0.0], [ln3, 0.0]]])


def test_token_logprobs_and_sft_loss_only_on_labels():
    labels = torch.tensor([[1, IGNORE_INDEX, 1]])
    lp = token_logprobs(_logits(), labels)
    torch.testing.assert_close(lp, torch.tensor([[math.log(3 / 4), 0.0, math.log(1 / 4)]]))
    # mean cross-entropy over the two labelled positions: -(log 3/4 + log 1/4) / 2
    expected = -(math.log(3 / 4) + math.log(1 / 4)) / 2
    assert sft_loss(_logits(), labels).item() == pytest.approx(expected, rel=1e-6)
    # the masked position does not count, whatever its logits
    other = _logits().clone()
    other[0, 1] = torch.tensor([50.0, -50.0])
    assert sft_loss(other, labels).item() == pytest.approx(expected, rel=1e-6)
    total, count = sft_loss_sum(_logits(), labels)
    assert count == 2 and total.item() == pytest.approx(2 * expected, rel=1e-6)
    assert sequence_logprobs(_logits(), labels).item() == pytest.approx(math.log(3 / 16), rel=1e-6)
    # logits of the labelled positions only (model(..., select=labels != IGNORE_INDEX)) give the same
    sel = _logits()[labels != IGNORE_INDEX]
    assert sft_loss(sel, labels).item() == pytest.approx(expected, rel=1e-6)
    assert selected_sequence_logprobs(sel, labels).item() == pytest.approx(math.log(3 / 16), rel=1e-6)
    assert sft_loss(_logits(), torch.full((1, 3), IGNORE_INDEX)).item() == 0.0  # nothing to learn: 0, not nan


def test_dpo_loss_is_the_sigmoid_formula():
    # beta * ((pi_c - ref_c) - (pi_r - ref_r)) = 0.1 * ((-1 + 2) - (-3 + 2)) = 0.2
    loss, chosen, rejected = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                                      torch.tensor([-2.0]), beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.2)), rel=1e-6)  # -log sigmoid(0.2)
    assert chosen.item() == pytest.approx(0.1) and rejected.item() == pytest.approx(-0.1)
    # policy = reference: loss log 2 for any beta; a wrong preference costs more than log 2
    same = dpo_loss(torch.tensor([-5.0, -1.0]), torch.tensor([-2.0, -9.0]), torch.tensor([-5.0, -1.0]),
                    torch.tensor([-2.0, -9.0]), beta=0.5)[0]
    torch.testing.assert_close(same, torch.full((2,), math.log(2)))
    wrong = dpo_loss(torch.tensor([-4.0]), torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), 1.0)[0]
    # (-4 + 2) - (-1 + 2) = -3
    assert wrong.item() == pytest.approx(math.log(1 + math.exp(3.0)), rel=1e-6)
    # large margins stay finite (softplus, not log(sigmoid))
    big = dpo_loss(torch.tensor([0.0]), torch.tensor([-1e4]), torch.tensor([0.0]), torch.tensor([0.0]), 1.0)[0]
    assert big.item() == 0.0


def test_bradley_terry_loss_is_the_formula():
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 3.0]))
    expected = [math.log(1 + math.exp(-1.0)), math.log(2), math.log(1 + math.exp(4.0))]
    torch.testing.assert_close(loss, torch.tensor(expected))


def _tiny(**over) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", **over))
    model.init_weights(3)
    return model


def test_packed_documents_compute_as_if_alone():
    """doc_ids make attention block-diagonal and positions restart the rotary angles: a row holding two
    documents gives each the logits it has alone; without them the second document sees the first."""
    model = _tiny()
    a, b = torch.randint(0, 256, (1, 7)), torch.randint(0, 256, (1, 5))
    packed = torch.cat([a, b], 1)
    doc = torch.tensor([[0] * 7 + [1] * 5])
    pos = torch.tensor([list(range(7)) + list(range(5))])
    with torch.no_grad():
        out = model(packed, doc_ids=doc, positions=pos)
        torch.testing.assert_close(out[:, :7], model(a), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[:, 7:], model(b), atol=1e-5, rtol=1e-5)
        assert (model(packed)[:, 7:] - model(b)).abs().max() > 1e-3
        select = torch.zeros(1, 12, dtype=torch.bool)
        select[0, [2, 9]] = True
        torch.testing.assert_close(model(packed, doc_ids=doc, positions=pos, select=select), out[select])
        assert model(packed, return_hidden=True).shape == (1, 12, 64)


def test_left_padded_batch_generates_as_single_prompts():
    """A KV cache that keeps doc ids: left padding (its own document) and per-row positions make a
    batch of prompts of different lengths decode exactly like each prompt alone."""
    model = _tiny()
    p1, p2 = [5, 6, 7, 8, 9], [1, 2]
    ref = [generate(model, p, 6, temperature=0) for p in (p1, p2)]
    tokens = torch.tensor([p1, [0, 0, 0] + p2])
    doc = torch.tensor([[1] * 5, [0, 0, 0, 1, 1]])
    pos = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 0, 1]])
    lens = torch.tensor([5, 2])
    cache = KVCache(model.cfg, 2, 11)
    got: list[list[int]] = [[], []]
    with torch.no_grad():
        logits = model(tokens, kv_cache=cache, start_pos=0, doc_ids=doc, positions=pos)[:, -1]
        for t in range(6):
            nxt = logits.argmax(-1)
            for i in range(2):
                got[i].append(int(nxt[i]))
            logits = model(nxt[:, None], kv_cache=cache, start_pos=5 + t, doc_ids=torch.ones(2, 1, dtype=torch.long),
                           positions=(lens + t)[:, None])[:, -1]
    assert got == ref


def test_reward_pools_read_the_scores_they_document():
    """scores_of on right-padded rows, against a hand loop: ``last`` reads the value at the reply's last
    token, ``mean`` averages over the reply, ``token`` averages out[t - 1, token_t] over the reply."""
    from train.reward import scores_of

    torch.manual_seed(0)
    out = torch.randn(2, 7, 256)
    model = lambda tokens: out  # noqa: E731 - the pools only read the model's output
    tokens = torch.randint(0, 256, (2, 7))
    first, last = torch.tensor([3, 2]), torch.tensor([5, 6])  # row 0: reply at 3..5, then padding
    want = {"last": [out[0, 5, 0], out[1, 6, 0]],
            "mean": [out[0, 3:6, 0].mean(), out[1, 2:7, 0].mean()],
            "token": [sum(out[0, t - 1, tokens[0, t]] for t in (3, 4, 5)) / 3,
                      sum(out[1, t - 1, tokens[1, t]] for t in range(2, 7)) / 5]}
    for pool, expected in want.items():
        got = scores_of(model, tokens, last, first, pool)
        assert torch.allclose(got, torch.stack(expected)), pool


def test_value_head():
    model = _tiny(value_head=True)
    tokens = torch.randint(0, 256, (2, 6))
    out = model(tokens)
    assert out.shape == (2, 6, 1) and torch.count_nonzero(out) == 0  # a new head scores everything 0
    assert model.num_params() == model.cfg.num_params()
    assert model.output.weight.shape == (1, 64)
    with pytest.raises(ValueError, match="value head"):
        ModelConfig.preset("tiny", value_head=True, tie_embeddings=True)
