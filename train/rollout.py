"""Sampling groups of replies for GRPO: G samples of one prompt in one batch with a key-value cache.

``generate_group`` runs the G copies of a prompt side by side (same prompt length, so no padding and
no attention mask), prefill once, then one token per forward pass against the cache. Three properties
the trainer relies on:

- **Reproducible across layouts.** Sampling is Gumbel-max, ``argmax(logits / T + g)`` with
  ``g = -log(-log(u))``, and the uniform noise ``u`` comes from a CPU ``torch.Generator`` seeded for this
  one prompt (``sample_seed(base, step, index)``), row ``i`` of each step's noise belonging to sample
  ``i``. The noise therefore depends only on (seed, step, prompt index), not on which rank draws it or
  what else that rank samples, so 1 and 2 data-parallel processes draw the same replies.
- **Lock step.** A sharded model (FSDP, tensor parallel) runs collectives inside every forward pass, so
  every rank must make the same number of them. A rank whose rows are all finished keeps feeding
  forward passes until an all-reduce of the unfinished-row counts says every rank is done (or
  ``max_new_tokens`` is reached).
- **Stop tokens.** A reply ends with (and includes) its first stop token; anything sampled after it is
  dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from train.model import KVCache


def sample_seed(base_seed: int, step: int, index: int) -> int:
    """A 63-bit seed for prompt ``index`` (its position in the global batch) of step ``step``; the same
    triple always gives the same seed, different triples independent-looking ones (numpy SeedSequence)."""
    state = np.random.SeedSequence([int(base_seed) % 2**32, int(step), int(index)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def _world_sync_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gumbel_noise(gen: torch.Generator, rows: int, vocab: int) -> torch.Tensor:
    """Standard Gumbel noise [rows, vocab] (fp32, CPU) from ``gen``."""
    u = torch.rand(rows, vocab, generator=gen, dtype=torch.float32)
    u = u.clamp_(min=torch.finfo(torch.float32).tiny, max=1.0 - torch.finfo(torch.float32).eps)
    return -torch.log(-torch.log(u))


def pick_tokens(logits: torch.Tensor, temperature: float, top_k: int | None,
                gen: torch.Generator | None) -> torch.Tensor:
    """Next tokens [rows] from logits [rows, vocab]: greedy when ``temperature <= 0``, else a sample of
    softmax(logits / temperature) (restricted to the ``top_k`` largest when given) by Gumbel-max."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    noise = gumbel_noise(gen, scaled.shape[0], scaled.shape[1]).to(scaled.device)
    return (scaled + noise).argmax(dim=-1)


def cut_at_stop(tokens: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """``tokens`` up to and including the first stop token (all of them when none occurs)."""
    stops = set(stop_ids)
    for i, t in enumerate(tokens):
        if t in stops:
            return list(tokens[:i + 1])
    return list(tokens)


@torch.no_grad()
def generate_group(model: torch.nn.Module, prompt_ids: Sequence[int], group_size: int, max_new_tokens: int,
                   temperature: float = 1.0, stop_ids: Sequence[int] = (), seed: int = 0,
                   top_k: int | None = None, sync: bool = True) -> list[list[int]]:
    """``group_size`` replies to one prompt, each cut after its first stop token.

    ``temperature <= 0`` is greedy (then every row is the same; use ``group_size=1``). With ``sync``
    (default) and a process group of more than one rank, every rank must call this the same number of
    times: the forward passes continue until every rank's rows are finished. The prompt plus
    ``max_new_tokens`` must fit the model's ``max_seq_len``.
    """
    if not prompt_ids:
        raise ValueError("generate_group needs a non-empty prompt")
    if group_size < 1 or max_new_tokens < 1:
        raise ValueError(f"group_size {group_size} and max_new_tokens {max_new_tokens} must be >= 1")
    cfg = model.cfg
    total = len(prompt_ids) + max_new_tokens
    if total > cfg.max_seq_len:
        raise ValueError(f"prompt of {len(prompt_ids)} tokens + max_new_tokens {max_new_tokens} exceeds "
                         f"the model's max_seq_len {cfg.max_seq_len}")
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    stops = torch.tensor(sorted(set(stop_ids)) or [-1], device=device)
    lock_step = sync and _world_sync_active()

    was_training = model.training
    model.eval()
    cache = KVCache(cfg, group_size, total)
    tokens = torch.tensor([list(prompt_ids)] * group_size, dtype=torch.long, device=device)
    finished = torch.zeros(group_size, dtype=torch.bool, device=device)
    out = []
    pos = 0
    try:
        for _ in range(max_new_tokens):
            logits = model(tokens, kv_cache=cache, start_pos=pos)[:, -1]
            pos += tokens.shape[1]
            nxt = pick_tokens(logits, temperature, top_k, gen)
            out.append(nxt)
            finished |= torch.isin(nxt, stops)
            pending = (~finished).sum()
            if lock_step:
                dist.all_reduce(pending)
            if int(pending) == 0:
                break
            tokens = nxt[:, None]
    finally:
        model.train(was_training)
    rows = torch.stack(out, dim=1).tolist()
    return [cut_at_stop(row, stop_ids) for row in rows]

