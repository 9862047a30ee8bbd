"""Sampling groups of replies for GRPO: G samples of each prompt, many prompts in one batch, with a
key-value cache.

``generate_groups`` runs the G copies of each prompt side by side, the prompts left-padded to one length
(pads masked out of attention, positions restarting where each prompt starts): prefill once, then one
token per forward pass against the cache for every row at once. Three properties the trainer relies on:

- **Reproducible across layouts.** Sampling is Gumbel-max, ``argmax(logits / T + g)`` with
  ``g = -log(-log(u))``, and the uniform noise ``u`` comes from a CPU ``torch.Generator`` seeded for this
  one prompt (``sample_seed(base, step, index)``), row ``i`` of each step's noise belonging to sample
  ``i``. The noise therefore depends only on (seed, step, prompt index), not on which rank draws it or
  which prompts share its batch, so 1 and 2 data-parallel processes draw the same replies.
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
def generate_groups(model: torch.nn.Module, prompts: Sequence[Sequence[int]], group_size: int, max_new_tokens: int,
                    temperature: float = 1.0, stop_ids: Sequence[int] = (), seeds: Sequence[int] = (0,),
                    top_k: int | None = None, sync: bool = True, pad_id: int = 0) -> list[list[list[int]]]:
    """``group_size`` replies to each of ``prompts``, all sampled in one batch; -> one list of replies per
    prompt, each reply cut after its first stop token.

    The prompts are left-padded to a common length (the pads are masked out of attention through
    ``doc_ids``; positions restart at 0 where each prompt starts), so one forward pass per new token serves
    every prompt. Prompt ``i``'s noise comes from its own generator seeded with ``seeds[i]``, so its
    replies do not depend on which prompts share its batch. ``temperature <= 0`` is greedy (every row of a
    group is then the same). With ``sync`` (default) and a process group of more than one rank, every rank
    must call this the same number of times: the forward passes continue until every rank's rows are
    finished. The longest prompt plus ``max_new_tokens`` must fit the model's ``max_seq_len``.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate_groups needs non-empty prompts")
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    if group_size < 1 or max_new_tokens < 1:
        raise ValueError(f"group_size {group_size} and max_new_tokens {max_new_tokens} must be >= 1")
    cfg = model.cfg
    width = max(len(p) for p in prompts)
    total = width + max_new_tokens
    if total > cfg.max_seq_len:
        raise ValueError(f"prompt of {width} tokens + max_new_tokens {max_new_tokens} exceeds "
                         f"the model's max_seq_len {cfg.max_seq_len}")
    device = next(model.parameters()).device
    gens = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
    stops = torch.tensor(sorted(set(stop_ids)) or [-1], device=device)
    lock_step = sync and _world_sync_active()

    n = len(prompts) * group_size
    tokens = torch.full((n, width), pad_id, dtype=torch.long)
    doc = torch.zeros((n, width), dtype=torch.long)
    pos = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: every prompt ends at the last column
        rows = slice(i * group_size, (i + 1) * group_size)
        tokens[rows, width - len(p):] = torch.tensor(list(p))
        doc[rows, width - len(p):] = 1
        pos[rows, width - len(p):] = torch.arange(len(p))
    lens = torch.tensor([len(p) for p in prompts]).repeat_interleave(group_size).to(device)
    tokens, doc, pos = tokens.to(device), doc.to(device), pos.to(device)

    was_training = model.training
    model.eval()
    cache = KVCache(cfg, n, total)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    out = []
    start = 0
    try:
        for t in range(max_new_tokens):
            logits = model(tokens, kv_cache=cache, start_pos=start, doc_ids=doc, positions=pos)[:, -1]
            start += tokens.shape[1]
            if temperature <= 0:
                nxt = logits.argmax(dim=-1)
            else:  # each prompt's rows from its own generator, one draw of [group_size, vocab] per token
                nxt = torch.cat([pick_tokens(logits[i * group_size:(i + 1) * group_size], temperature, top_k, gen)
                                 for i, gen in enumerate(gens)])
            out.append(nxt)
            finished |= torch.isin(nxt, stops)
            pending = (~finished).sum()
            if lock_step:
                dist.all_reduce(pending)
            if int(pending) == 0:
                break
            tokens = nxt[:, None]
            doc = torch.ones((n, 1), dtype=torch.long, device=device)
            pos = (lens + t)[:, None]
    finally:
        model.train(was_training)
    rows = [cut_at_stop(row, stop_ids) for row in torch.stack(out, dim=1).tolist()]
    return [rows[i * group_size:(i + 1) * group_size] for i in range(len(prompts))]


def generate_group(model: torch.nn.Module, prompt_ids: Sequence[int], group_size: int, max_new_tokens: int,
                   temperature: float = 1.0, stop_ids: Sequence[int] = (), seed: int = 0,
                   top_k: int | None = None, sync: bool = True) -> list[list[int]]:
    """``group_size`` replies to one prompt (``generate_groups`` for a single prompt)."""
    if not prompt_ids:
        raise ValueError("generate_group needs a non-empty prompt")
    return generate_groups(model, [prompt_ids], group_size, max_new_tokens, temperature, stop_ids, [seed],
                           top_k, sync)[0]
