"""The batch stream over a real training plan (`mix_plan`): shares, micro-batches, resume, phases,
held-out batches, and the one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixtures.reader import TrainingPlan
from pipelines.errors import UserError
from train.data import BatchStream, accumulation_steps, check_length, eval_sources, heldout_batches


@pytest.fixture(scope="module")
def plan(mix_plan) -> TrainingPlan:
    return TrainingPlan(str(mix_plan))


def test_ranks_split_the_global_batch_contiguously(plan):
    B, M = 8, 2
    streams = [BatchStream(plan, B, M, dp_rank=r, dp_size=2) for r in range(2)]
    assert streams[0].accum == 2
    for step in range(3):
        got = [torch.cat(s.next()) for s in streams]
        assert all(g.shape == (4, plan.seq_len + 1) and g.dtype == torch.int64 for g in got)
        whole = torch.cat(got).numpy()
        expect = np.stack([plan.sample(n) for n in range(step * B, (step + 1) * B)])
        assert np.array_equal(whole, expect)  # rank 0 then rank 1: the global batch in order
    assert streams[1].rank_samples(3) == range(28, 32)
    # one rank alone reads the same global batches
    solo = BatchStream(plan, B, 4)
    assert solo.accum == 2
    first = torch.cat(solo.next()).numpy()
    assert np.array_equal(first, np.stack([plan.sample(n) for n in range(8)]))


def test_resume_continues_at_the_next_global_batch(plan):
    a = BatchStream(plan, 6, 3)
    for _ in range(4):
        a.next()
    state = a.state_dict()
    assert state == {"samples_consumed": 24} and a.step == 4
    b = BatchStream(plan, 6, 1, dp_rank=1, dp_size=2)  # another layout resumes the same stream
    b.load_state_dict(state)
    nxt = torch.cat(a.next()).numpy()
    assert np.array_equal(torch.cat(b.next()).numpy(), nxt[3:])


def test_phase_switches_at_its_first_sample(plan):
    first = plan.phases[1]["first_sample"]
    B = 4
    s = BatchStream(plan, B, B, consumed=(first // B) * B)
    assert s.phase == (plan.phases[0]["name"] if first % B else plan.phases[1]["name"])
    s.consumed = (first // B + 1) * B
    assert s.phase == plan.phases[1]["name"] == "anneal"


def test_errors_are_one_line(plan):
    with pytest.raises(UserError, match="not a multiple of batch.micro_batch_size 3 x 2") as e:
        accumulation_steps(8, 3, 2)
    assert "\n" not in str(e.value)
    steps = plan.num_samples // 16 + 1
    with pytest.raises(UserError, match=f"needs {steps * 16:,}: lower max_steps to {plan.num_samples // 16}") as e:
        check_length(plan, 16, steps)
    assert "\n" not in str(e.value)
    check_length(plan, 16, steps - 1)
    s = BatchStream(plan, 16, 16, consumed=(plan.num_samples // 16) * 16)
    with pytest.raises(UserError, match="used up"):
        s.next()


def test_heldout_batches_cover_each_sample_once_across_ranks(plan):
    sources = eval_sources(plan)
    assert sources and all(plan.heldout_samples(s) > 0 for s in sources)
    source = max(sources, key=plan.heldout_samples)
    n = plan.heldout_samples(source)
    M, dp = 2, 2
    batches = (n + M * dp - 1) // (M * dp)  # all of them: the last round is ragged
    per_rank = [list(heldout_batches(plan, source, batches, M, r, dp)) for r in range(dp)]
    assert len(per_rank[0]) == len(per_rank[1]) == batches  # same number of forward passes on each rank
    seen = [b for rank in per_rank for b in rank if b is not None]
    assert sum(len(b) for b in seen) == n
    rows = {tuple(row.tolist()) for b in seen for row in b}
    assert rows == {tuple(plan.heldout_sample(source, k).tolist()) for k in range(n)}
    # fewer batches than the source has: the first batches * M * dp samples
    few = list(heldout_batches(plan, source, 1, M, 0, 1))
    assert len(few) == 1 and np.array_equal(few[0].numpy(), np.stack([plan.heldout_sample(source, k) for k in range(M)]))
