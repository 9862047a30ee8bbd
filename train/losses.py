"""The post-training losses as pure functions of logits / log-probabilities / scores.

- ``token_logprobs(logits, labels)``: log p(label) per position, 0 where the label is IGNORE_INDEX.
- ``sft_loss``: mean next-token cross-entropy over the positions whose label is not IGNORE_INDEX (the
  assistant tokens); ``sft_loss_sum`` the sum and the count, for exact means across micro-batches / ranks.
- ``dpo_loss`` (Rafailov et al. 2023, the sigmoid form)::

      loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))

  with pi_* / ref_* the summed log-probabilities of the chosen / rejected reply under the policy and the
  frozen reference; the implicit rewards are beta * (pi - ref) and the margin their difference.
- ``bradley_terry_loss`` (the reward model): ``-log sigmoid(r_c - r_r)``.

``-log sigmoid(x)`` is computed as ``softplus(-x)`` (= ``-F.logsigmoid(x)``), which is exact for large
|x| where the naive form overflows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, T, V] logits, [B, T] labels -> [B, T] log p(label), 0.0 where label == IGNORE_INDEX (fp32)."""
    keep = labels != IGNORE_INDEX
    safe = labels.masked_fill(~keep, 0)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logp * keep


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] sum of each row's token log-probabilities over its labelled positions (log p(reply | prompt))."""
    return token_logprobs(logits, labels).sum(-1)


def selected_sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] summed log-probabilities per row from logits of the labelled positions only: ``logits`` [N, V]
    as ``model(tokens, select=labels != IGNORE_INDEX)`` returns them (row-major), ``labels`` [B, T]."""
    select = labels != IGNORE_INDEX
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels[select].unsqueeze(-1)).squeeze(-1)
    rows = select.nonzero()[:, 0]
    return torch.zeros(labels.shape[0], dtype=logp.dtype, device=logp.device).index_add(0, rows, logp)


def sft_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum of the cross-entropy over labelled positions, number of labelled positions). ``logits`` are
    [B, T, V], or [N, V] for the labelled positions only (``model(..., select=labels != IGNORE_INDEX)``)."""
    if logits.dim() == 2 and labels.dim() == 2:
        labels = labels[labels != IGNORE_INDEX]
    total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.flatten(),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total, int((labels != IGNORE_INDEX).sum())


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions with a label (not IGNORE_INDEX); 0 when there is none."""
    total, count = sft_loss_sum(logits, labels)
    return total / max(count, 1)


def dpo_loss(pi_c: torch.Tensor, pi_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO sigmoid loss [N] and the implicit rewards of the chosen / rejected replies [N]
    (detached). Average the loss over pairs yourself (``.mean()``), or sum it for exact global means."""
    chosen = beta * (pi_c - ref_c)
    rejected = beta * (pi_r - ref_r)
    loss = F.softplus(-(chosen - rejected))
    return loss, chosen.detach(), rejected.detach()


def bradley_terry_loss(r_c: torch.Tensor, r_r: torch.Tensor) -> torch.Tensor:
    """Per-pair Bradley-Terry loss [N]: -log sigmoid(r_c - r_r)."""
    return F.softplus(-(r_c - r_r))
