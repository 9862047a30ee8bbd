"""GRPO (group relative policy optimization, DeepSeekMath 2024): ``python -m train.grpo --config X.yaml``.

Per step: the step's global batch of ``prompts_per_step`` prompts (a seeded order per epoch, each
data-parallel rank taking a contiguous share), ``group_size`` (G) sampled replies per prompt from the
current policy (``train.rollout.generate_groups``: many prompts' groups per batch, KV cache, seeds per
prompt so any number of ranks draws the same replies), a reward per reply (a verifier against the row's answer, or a
trained reward model's score), group-relative advantages, then ``iterations`` (mu) optimizer updates of

    loss = - 1/N  sum_i  1/|o_i|  sum_t  [ min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i) - beta k3_it ]

over the N = prompts_per_step x G replies (reply tokens: those after the prompt up to and including the
first stop token; later tokens are padding), where

    A_i    = (r_i - mean(r_group)) / (std(r_group) + 1e-4)          (std with Bessel's correction)
    rho_it = exp(logp_it - old_logp_it)                              (old: the sampling policy)
    k3_it  = exp(ref_it - logp_it) - (ref_it - logp_it) - 1          (Schulman's k3 KL estimator)

and ref is the frozen init checkpoint (the SFT model; it also runs with kl_beta 0, for the logged KL).
With mu = 1 the old log-probs are the current ones detached (rho = 1, gradient A * grad logp); with
mu > 1 they are computed once before the first update. Log-probs are of softmax(logits / temperature),
the distribution the replies were drawn from. Sequences are averaged over their own tokens first (the
GRPO paper's 1/G sum_i 1/|o_i| sum_t), then over all N replies of the step; each rank's micro-batches
carry ``sum / N * dp`` so FSDP's gradient average over dp gives the global mean in any layout.

Batch: ``batch.global_batch_size`` counts replies (prompts_per_step x group_size, prompts_per_step
defaults to their ratio) and ``batch.micro_batch_size`` the replies per forward pass of the loss.

Metrics per logged step (all ranks together): loss, reward (mean), accuracy (the rows' own verifiers, also
under a reward model), kl (k3, mean over reply tokens), clip_frac (reply tokens where the clipped term
won), reply_len (tokens), flat_groups (share of groups whose rewards are all equal: no signal),
grad_norm. Evaluation: ``exact_match``, greedy held-out accuracy on ``data.heldout_prompts``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.errors import UserError
from train.stage import EpochOrder, StageTrainer, stage_main

ADV_EPS = 1e-4

# ---------------------------------------------------------------------------------------------------------
# Config section
# ---------------------------------------------------------------------------------------------------------


class RewardSection(BaseModel):
    """Where rewards come from: ``{verifier: auto|exact|numeric}`` (auto: each prompt row's own
    verifier) or ``{reward_model: PATH}`` (a checkpoint trained by ``train.reward``). Default: auto."""

    model_config = ConfigDict(extra="forbid")

    verifier: Literal["auto", "exact", "numeric"] | None = None
    reward_model: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> RewardSection:
        if self.verifier is not None and self.reward_model is not None:
            raise ValueError("reward: give either verifier or reward_model, not both")
        if self.verifier is None and self.reward_model is None:
            self.verifier = "auto"
        return self


class GRPOSection(BaseModel):
    """The ``grpo:`` section of a stage config."""

    model_config = ConfigDict(extra="forbid")

    group_size: int = Field(8, ge=2)  # G replies per prompt (>= 2: the advantage needs a group std)
    # prompts per step over all ranks; default batch.global_batch_size / group_size (the batch counts replies)
    prompts_per_step: int | None = Field(None, ge=1)
    epsilon: float = Field(0.2, gt=0, lt=1)  # ratio clipping
    kl_beta: float = Field(0.04, ge=0)  # weight of the k3 KL to the reference (0: no KL penalty)
    temperature: float = Field(1.0, gt=0)  # sampling temperature (also applied to the loss' log-probs)
    top_k: int | None = Field(None, ge=1)  # sample among the k most likely tokens
    max_new_tokens: int = Field(32, ge=1)  # reply length limit
    iterations: int = Field(1, ge=1)  # mu: optimizer updates per batch of rollouts
    # replies sampled in one batch (whole groups: at least one prompt's group_size); fewer forward passes
    # per step, more memory for the KV cache
    rollout_batch: int = Field(256, ge=1)
    reward: RewardSection = RewardSection()


# ---------------------------------------------------------------------------------------------------------
# The math, as pure functions
# ---------------------------------------------------------------------------------------------------------


def group_advantages(rewards: torch.Tensor, eps: float = ADV_EPS) -> torch.Tensor:
    """(r - group mean) / (group std + eps) for rewards [P, G] (one row per prompt); the std has
    Bessel's correction (torch's default, as TRL). A group with equal rewards gets zero advantages."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [prompts, group >= 2], got {tuple(rewards.shape)}")
    rewards = rewards.float()
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference) from tokens sampled by the policy:
    exp(ref - logp) - (ref - logp) - 1 (non-negative, unbiased, low variance; Schulman 2020)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def clipped_objective(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO objective min(rho A, clip(rho, 1-eps, 1+eps) A), rho = exp(logp - old_logp).

    logp, old_logp, mask: [N, T]; advantages: [N] (one per sequence). Returns (objective [N, T], zero
    outside ``mask``; clipped [N, T] bool: the clipped term was strictly smaller, i.e. the token's
    gradient is cut)."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None].to(ratio.dtype)
    plain = ratio * adv
    clipped = ratio.clamp(1 - epsilon, 1 + epsilon) * adv
    objective = torch.minimum(plain, clipped)
    mask = mask.bool()
    return objective * mask, (clipped < plain) & mask


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, epsilon: float, beta: float,
              num_sequences: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO loss of a batch of N replies (see the module docstring for the formula).

    Each sequence's per-token terms are averaged over its own reply tokens, then the per-sequence means
    are summed and divided by ``num_sequences`` (default N): pass the total over all micro-batches and
    data-parallel ranks times the number of ranks over which gradients are averaged to get the global
    mean. ``ref_logp=None`` leaves out the KL term. Returns (loss, sums): ``sums`` holds detached totals
    over the batch's reply tokens (``kl``, ``clipped``, ``tokens``) and sequences (``sequences``) to
    aggregate across micro-batches and ranks."""
    mask = mask.bool()
    objective, clipped = clipped_objective(logp, old_logp, advantages, mask, epsilon)
    per_token = objective
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp) * mask
        if beta:
            per_token = per_token - beta * kl
    else:
        kl = torch.zeros_like(logp)
    lengths = mask.sum(dim=1)
    per_seq = (per_token * mask).sum(dim=1) / lengths.clamp(min=1)
    n = logp.shape[0] if num_sequences is None else num_sequences
    loss = -per_seq.sum() / n
    sums = {"kl": kl.detach().sum(), "clipped": clipped.sum().float(), "tokens": lengths.sum().float(),
            "sequences": torch.tensor(float(logp.shape[0]), device=logp.device)}
    return loss, sums


# ---------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------


def prompts_per_step(g: GRPOSection, global_batch_size: int, dp: int) -> int:
    """Prompts per step from ``batch.global_batch_size`` (which counts replies: prompts x group_size) and
    the section; ValueError when they disagree or the prompts do not split evenly over the dp ranks."""
    if global_batch_size % g.group_size:
        raise ValueError(f"batch.global_batch_size {global_batch_size} counts replies: it must be a multiple "
                         f"of grpo.group_size {g.group_size}")
    n = global_batch_size // g.group_size
    if g.prompts_per_step is not None and g.prompts_per_step != n:
        raise ValueError(f"grpo.prompts_per_step {g.prompts_per_step} x group_size {g.group_size} must equal "
                         f"batch.global_batch_size {global_batch_size} (the replies per step)")
    if n % dp:
        raise ValueError(f"{n} prompts per step do not split over {dp} data-parallel ranks (each rank samples "
                         "whole groups)")
    return n


@dataclass
class Rollouts:
    """This rank's replies of one step, in (prompt, sample) order: ``prompts[i]`` / ``replies[i]`` token
    ids, their rewards, verifier scores and advantages."""

    prompts: list[list[int]]
    replies: list[list[int]]
    rewards: torch.Tensor  # [n]
    correct: torch.Tensor  # [n] 1.0 / 0.0 by the row's own verifier
    advantages: torch.Tensor  # [n]
    flat_groups: torch.Tensor  # [prompts] 1.0 where every reply of the group got the same reward


class GRPOTrainer(StageTrainer):
    """GRPO on ``data.train`` (prompts.jsonl rows: prompt, answer, verifier) from ``init_from`` (the SFT
    checkpoint, also the frozen KL reference). ``batch.global_batch_size`` counts replies (prompts_per_step
    x group_size) and ``batch.micro_batch_size`` the replies per forward pass of the loss."""

    stage = "grpo"

    def load_data(self) -> None:
        from train.posttrain_data import load_prompts

        cfg = self.cfg
        g = cfg.grpo
        if not isinstance(g, GRPOSection):  # a dict, None, or the class of another import (python -m)
            g = GRPOSection.model_validate(g.model_dump() if isinstance(g, BaseModel) else g or {})
        self.g = g
        try:
            self.prompts_per_step = prompts_per_step(g, cfg.batch.global_batch_size, self.dp)
        except ValueError as e:
            raise UserError(f"{cfg.origin}: {e}") from None
        max_prompt = self.max_len - g.max_new_tokens
        if max_prompt < 1:
            raise UserError(f"{cfg.origin}: grpo.max_new_tokens {g.max_new_tokens} leaves no room for a prompt in "
                            f"max_len {self.max_len}")
        default = None if g.reward.verifier in (None, "auto") else g.reward.verifier
        self.prompts, report = load_prompts(cfg.data.train, self.template, max_prompt, default_verifier=default)
        self.add_report("train", report, required=True)
        self.order = EpochOrder(len(self.prompts), self.prompts_per_step, self.dp_rank, self.dp, cfg.seed)
        self.reward_model = None
        if g.reward.reward_model:
            from train.reward import load_reward_model

            self.reward_model, rm_template = load_reward_model(g.reward.reward_model, self.device)
            self.reward_model.requires_grad_(False)
            if (rm_template.vocab_size, rm_template.role_ids) != (self.template.vocab_size, self.template.role_ids):
                raise UserError(f"{g.reward.reward_model}: the reward model's tokenizer is not the policy's "
                                f"({rm_template.path} vs {self.template.path})")
        self.reference = self.load_reference()

    # -- one step ------------------------------------------------------------------------------------

    def verifier_of(self, example) -> str:
        v = self.g.reward.verifier
        return example.verifier if v in (None, "auto") else v

    def rollout(self) -> Rollouts:
        """Sample this rank's groups and score them."""
        from train.rollout import generate_groups, sample_seed
        from train.verifiers import verify

        g = self.g
        mine, _ = self.order.next()
        first = self.dp_rank * len(mine)  # position of this rank's first prompt in the global batch
        groups: list[list[list[int]]] = []
        per_call = max(1, g.rollout_batch // g.group_size)  # prompts per generate call (ranks: equal counts)
        for c in range(0, len(mine), per_call):
            rows = mine[c:c + per_call]
            groups += generate_groups(self.model, [self.prompts[r].prompt_ids for r in rows], g.group_size,
                                      g.max_new_tokens, g.temperature, self.template.stop_ids,
                                      [sample_seed(self.cfg.seed, self.step, first + c + j) for j in range(len(rows))],
                                      g.top_k, pad_id=self.template.pad_id)
        prompts, replies, rewards, correct = [], [], [], []
        for row, group in zip(mine, groups, strict=True):
            ex = self.prompts[row]
            texts = [self.template.decode_response(r) for r in group]
            right = [verify(ex.verifier, t, ex.answer) for t in texts]
            if self.reward_model is None:
                verifier = self.verifier_of(ex)
                scores = right if verifier == ex.verifier else [verify(verifier, t, ex.answer) for t in texts]
            else:
                from train.reward import score

                scores = score(self.reward_model, self.template, [ex.prompt_ids] * len(group), group).tolist()
            prompts += [ex.prompt_ids] * len(group)
            replies += group
            rewards += scores
            correct += right
        r = torch.tensor(rewards, dtype=torch.float32).view(len(mine), g.group_size)
        adv = group_advantages(r)
        flat = (r.max(dim=1).values == r.min(dim=1).values).float()
        return Rollouts(prompts, replies, r.flatten(), torch.tensor(correct), adv.flatten(), flat)

    def token_logprobs(self, model, prompts, replies) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs [k, T] of the reply tokens under ``model`` at the sampling temperature, mask [k, T])."""
        from train.losses import IGNORE_INDEX, token_logprobs
        from train.posttrain_data import prompt_response_batch

        tokens, labels = prompt_response_batch(prompts, replies, self.template.pad_id)
        tokens, labels = tokens.to(self.device), labels.to(self.device)
        logits = model(tokens)
        if self.g.temperature != 1.0:
            logits = logits / self.g.temperature
        return token_logprobs(logits, labels), labels != IGNORE_INDEX

    def train_step(self) -> dict[str, float]:
        g, M = self.g, self.cfg.batch.micro_batch_size
        ro = self.rollout()
        n_global = self.prompts_per_step * g.group_size
        parts = [slice(i * M, (i + 1) * M) for i in range(self.accum)]
        with torch.no_grad():
            ref = [self.token_logprobs(self.reference, ro.prompts[s], ro.replies[s])[0] for s in parts]
            old = None
            if g.iterations > 1:  # the sampling policy's log-probs, fixed for the mu updates
                self.model.eval()
                old = [self.token_logprobs(self.model, ro.prompts[s], ro.replies[s])[0] for s in parts]
                self.model.train()
        sums = torch.zeros(4, device=self.device, dtype=torch.float64)  # loss, kl, clipped, reply tokens
        grad_norm = 0.0
        for _ in range(g.iterations):
            for i, s in enumerate(parts):
                self.set_grad_sync(i == self.accum - 1)
                logp, mask = self.token_logprobs(self.model, ro.prompts[s], ro.replies[s])
                old_logp = logp.detach() if old is None else old[i]
                loss, stats = grpo_loss(logp, old_logp, ref[i], ro.advantages[s].to(self.device), mask,
                                        g.epsilon, g.kl_beta, num_sequences=n_global)
                (loss * self.dp).backward()  # FSDP averages gradients over dp: the global mean
                sums += torch.stack([loss.detach(), stats["kl"], stats["clipped"], stats["tokens"]]).double()
            grad_norm = self.optimizer_step()
        per_step = torch.cat([sums, torch.tensor(
            [float(ro.rewards.sum()), float(ro.correct.sum()), float(sum(len(r) for r in ro.replies)),
             float(ro.flat_groups.sum())], device=self.device, dtype=torch.float64)])
        t = self.sum_over_dp(per_step)
        it = g.iterations
        # loss: the global mean per update (each rank's micro-batches hold its share of it), over the mu updates
        return {"loss": float(t[0]) / it, "reward": float(t[4]) / n_global,
                "accuracy": float(t[5]) / n_global, "kl": float(t[1] / t[3].clamp(min=1)),
                "clip_frac": float(t[2] / t[3].clamp(min=1)), "reply_len": float(t[6]) / n_global,
                "flat_groups": float(t[7]) / self.prompts_per_step, "grad_norm": grad_norm,
                "epoch": self.order.epoch}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        em = self.exact_match()
        return {} if em is None else {"exact_match": em}


def main(argv: list[str] | None = None) -> int:
    return stage_main(GRPOTrainer, argv)


if __name__ == "__main__":
    sys.exit(main())
