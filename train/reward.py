"""Reward model training: ``torchrun -m train.reward --config reward.yaml`` (also ``python -m train.reward``
and ``smelter train --stage reward``).

The reward model is the transformer with a scalar head: ``ModelConfig.value_head`` makes the output
projection Linear(dim, 1) (untied, zero-initialized, so every reply starts at score 0), and the score of
a (prompt, reply) is the head's value at the last token of prompt + reply, the reply's
``<|end_of_turn|>`` (``reward.pool: mean``: the mean of the head's values over the reply's tokens, which a
small model learns faster when correctness is decided token by token). The backbone loads from ``init_from`` (an SFT or base checkpoint; its output
projection is not used). It trains on (prompt, chosen, rejected) pairs with the Bradley-Terry loss::

    loss = -log sigmoid(r(prompt, chosen) - r(prompt, rejected))

Logged: ``loss``, pairwise ``accuracy`` (r(c) > r(r)) and the mean ``margin`` on train batches and on the
held-out pairs. The checkpoint's trainer_state has ``model.value_head: true``; ``load_reward_model`` and
``score`` below load and apply it (GRPO's reward-model rewards).
"""

from __future__ import annotations

import sys

import torch

from pipelines.errors import UserError
from train.stage import EpochOrder, StageTrainer, chunks, stage_main


def scores_of(model, tokens: torch.Tensor, last: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """[B] the value head's output at each row's ``last`` index (rows right-padded), or with ``first``
    (the reply's first index) the mean of its outputs over positions first..last (``reward.pool: mean``)."""
    values = model(tokens)[..., 0]
    last = last.to(values.device)
    if first is None:
        return values[torch.arange(len(last), device=values.device), last]
    cols = torch.arange(values.shape[1], device=values.device)[None]
    span = (cols >= first.to(values.device)[:, None]) & (cols <= last[:, None])
    return (values * span).sum(1) / span.sum(1)


class RewardTrainer(StageTrainer):
    stage = "reward"

    def model_config(self, base):
        return base.with_(value_head=True, tie_embeddings=False)

    def load_data(self) -> None:
        from train.posttrain_data import load_pairs

        cfg = self.cfg
        self.pairs, report = load_pairs(cfg.data.train, self.template, self.max_len)
        self.add_report("train", report, required=True)
        self.heldout = []
        if cfg.data.heldout:
            held, report = load_pairs(cfg.data.heldout, self.template, self.max_len)
            self.add_report("heldout", report)
            self.heldout = held[:cfg.eval.max_examples]
        self.order = EpochOrder(len(self.pairs), cfg.batch.global_batch_size, self.dp_rank, self.dp, cfg.seed)

    def _stats(self, pairs, scale: float | None) -> torch.Tensor:
        """Sums over ``pairs`` of (loss, accuracy, margin); backward of loss_sum * scale when given."""
        from train.losses import bradley_terry_loss
        from train.posttrain_data import score_batch

        prompts = [p.prompt_ids for p in pairs] * 2
        replies = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
        tokens, last = score_batch(prompts, replies, self.template.pad_id)
        first = torch.tensor([len(p) for p in prompts]) if self.cfg.reward.pool == "mean" else None
        r = scores_of(self.model, tokens.to(self.device), last, first)
        r_c, r_r = r[:len(pairs)], r[len(pairs):]
        loss = bradley_terry_loss(r_c, r_r)
        if scale is not None:
            (loss.sum() * scale).backward()
        margin = (r_c - r_r).detach()
        return torch.stack([loss.detach().sum(), (margin > 0).float().sum(), margin.sum()]).double()

    @staticmethod
    def _named(sums: torch.Tensor, n: int) -> dict[str, float]:
        return {k: float(v) / max(n, 1) for k, v in zip(("loss", "accuracy", "margin"), sums, strict=True)}

    def train_step(self) -> dict[str, float]:
        mine, everyone = self.order.next()
        n, M = len(everyone), self.cfg.batch.micro_batch_size
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)
        for i in range(self.accum):
            self.set_grad_sync(i == self.accum - 1)
            part = mine[i * M:(i + 1) * M]
            sums += self._stats([self.pairs[r] for r in part], self.dp / n)
        grad_norm = self.optimizer_step()
        return {**self._named(self.sum_over_dp(sums), n), "grad_norm": grad_norm, "epoch": self.order.epoch}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.heldout:
            return {}
        self.model.eval()
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)
        for chunk in self.dealt_chunks(len(self.heldout), self.cfg.batch.micro_batch_size):
            got = self._stats([self.heldout[i] for i in (chunk or [0])], None)
            if chunk is not None:
                sums += got
        self.model.train()
        return self._named(self.sum_over_dp(sums), len(self.heldout))


# ---------------------------------------------------------------------------------------------------------
# using a trained reward model (GRPO)


def load_reward_model(path: str, device: str | torch.device = "cpu"):
    """(reward model in eval mode on one process, its ChatTemplate) from a reward checkpoint (a step-N
    folder or a root)."""
    from train.chat import ChatTemplate, tokenizer_path_of
    from train.sample import load_model

    model, state = load_model(path, str(device))
    if not model.cfg.value_head:
        raise UserError(f"{path}: not a reward model checkpoint (model.value_head is false): train one with "
                        "`smelter train --stage reward`")
    model.reward_pool = ((state.get("config") or {}).get("reward") or {}).get("pool", "last")
    return model, ChatTemplate.from_tokenizer_file(tokenizer_path_of(state))


@torch.no_grad()
def score(model, template, prompt_ids_list: list[list[int]], reply_ids_list: list[list[int]],
          batch_size: int = 16) -> torch.Tensor:
    """[N] float32 scores of the (prompt, reply) pairs; replies end with <|end_of_turn|> (encode_response),
    the score is read at their last token (or averaged over the reply: a model trained with
    ``reward.pool: mean``, as load_reward_model records in ``model.reward_pool``)."""
    from train.posttrain_data import score_batch

    if len(prompt_ids_list) != len(reply_ids_list):
        raise ValueError("as many prompts as replies")
    device = next(model.parameters()).device
    out = []
    for idx in chunks(list(range(len(prompt_ids_list))), batch_size):
        tokens, last = score_batch([prompt_ids_list[i] for i in idx], [reply_ids_list[i] for i in idx],
                                   template.pad_id)
        first = None
        if getattr(model, "reward_pool", "last") == "mean":
            first = torch.tensor([len(prompt_ids_list[i]) for i in idx])
        out.append(scores_of(model, tokens.to(device), last, first).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def main(argv: list[str] | None = None) -> int:
    return stage_main(RewardTrainer, argv)


if __name__ == "__main__":
    sys.exit(main())
