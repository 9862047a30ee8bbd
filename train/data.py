"""The trainer's batch stream over a training plan, Megatron's data semantics.

Global batch ``g`` is the plan's samples ``[g*B, (g+1)*B)`` (``B`` = global batch size). Data-parallel
rank ``r`` of ``dp`` takes the contiguous share ``[g*B + r*B/dp, g*B + (r+1)*B/dp)`` and splits it into
micro-batches of ``M`` samples (gradient accumulation ``B / (M * dp)``). Ranks of one tensor-parallel
group share a dp rank and so read the same samples. The plan memory-maps its token files, so a rank
touches only the pages of its own samples. The curriculum's phases are in sample order, so the phase
switch falls at the global batch that holds the phase's first sample.

The stream's state is one number, the samples consumed: a resumed run continues at the very next
global batch whatever its parallel layout.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mixtures.reader import TrainingPlan
from pipelines.errors import UserError


def accumulation_steps(global_batch: int, micro_batch: int, dp: int) -> int:
    """Micro-batches per rank per optimizer step; a one-line error when the batch does not divide."""
    if global_batch % (micro_batch * dp):
        raise UserError(f"batch.global_batch_size {global_batch} is not a multiple of "
                        f"batch.micro_batch_size {micro_batch} x {dp} data-parallel ranks")
    return global_batch // (micro_batch * dp)


def check_length(plan: TrainingPlan, global_batch: int, max_steps: int) -> None:
    """Stop before training when the plan holds fewer samples than ``max_steps`` global batches."""
    need = global_batch * max_steps
    if plan.num_samples < need:
        raise UserError(
            f"{plan.folder}: the plan has {plan.num_samples:,} samples but max_steps {max_steps} x "
            f"global_batch_size {global_batch} needs {need:,}: lower max_steps to "
            f"{plan.num_samples // global_batch} or plan more tokens (budget_tokens in the mixture)")


class BatchStream:
    """This rank's micro-batches, one optimizer step at a time."""

    def __init__(self, plan: TrainingPlan, global_batch: int, micro_batch: int, dp_rank: int = 0,
                 dp_size: int = 1, consumed: int = 0):
        self.plan, self.global_batch, self.micro_batch = plan, global_batch, micro_batch
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.accum = accumulation_steps(global_batch, micro_batch, dp_size)
        if consumed % global_batch:
            raise UserError(f"samples consumed {consumed} is not a whole number of global batches of {global_batch}")
        self.consumed = consumed

    @property
    def step(self) -> int:
        """Global batches consumed so far (= optimizer steps taken)."""
        return self.consumed // self.global_batch

    @property
    def phase(self) -> str:
        """The curriculum phase of the next global batch (of its first sample)."""
        return self.plan.phase_of(min(self.consumed, self.plan.num_samples - 1))["name"]

    def rank_samples(self, step: int) -> range:
        """The global sample numbers this rank reads for optimizer step ``step`` (0-based)."""
        share = self.global_batch // self.dp_size
        first = step * self.global_batch + self.dp_rank * share
        return range(first, first + share)

    def next(self) -> list[torch.Tensor]:
        """The next step's micro-batches for this rank: ``accum`` int64 tensors ``[M, seq_len + 1]``."""
        if self.consumed + self.global_batch > self.plan.num_samples:
            raise UserError(f"{self.plan.folder}: the plan's {self.plan.num_samples:,} samples are used up "
                            f"after {self.step} steps")
        samples = self.rank_samples(self.step)
        out = []
        for i in range(self.accum):
            part = samples[i * self.micro_batch:(i + 1) * self.micro_batch]
            out.append(torch.from_numpy(np.stack([self.plan.sample(n) for n in part])))
        self.consumed += self.global_batch
        return out

    def state_dict(self) -> dict[str, int]:
        return {"samples_consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state["samples_consumed"])


def heldout_batches(plan: TrainingPlan, source: str, batches: int, micro_batch: int, dp_rank: int = 0,
                    dp_size: int = 1) -> Iterator[torch.Tensor | None]:
    """This rank's held-out micro-batches of ``source`` for one evaluation.

    The first ``min(batches * micro_batch * dp_size, held-out samples)`` held-out samples are dealt
    out in blocks of ``micro_batch`` to the dp ranks in turn. Every rank yields the same number of
    items (sharded models need every rank in every forward pass): ``None`` where it has no samples
    left, which the caller runs as padding and does not count."""
    total = min(batches * micro_batch * dp_size, plan.heldout_samples(source))
    rounds = -(-total // (micro_batch * dp_size))
    for b in range(rounds):
        first = (b * dp_size + dp_rank) * micro_batch
        ks = range(first, min(first + micro_batch, total))
        yield torch.from_numpy(np.stack([plan.heldout_sample(source, k) for k in ks])) if len(ks) else None


def eval_sources(plan: TrainingPlan) -> list[str]:
    """The sources with held-out samples, in the plan's order."""
    return [s for s in plan.sources if plan.heldout_samples(s) > 0]
