"""Reward model training: ``torchrun -m train.reward --config reward.yaml`` (also ``python -m train.reward``
and ``smelter train --stage reward``).

The reward model is the transformer with a new output head (zero-initialized, so every reply starts at
score 0) whose backbone loads from ``init_from`` (an SFT or base checkpoint; its output projection is not
used). ``reward.pool`` says how a (prompt, reply) gets its scalar:

- ``last``: ``ModelConfig.value_head`` makes the head Linear(dim, 1); the score is its value at the reply's
  last token, its ``<|end_of_turn|>``.
- ``mean``: the same head, averaged over the reply's tokens.
- ``token``: the head is Linear(dim, vocab), one value per possible next token (a Q-head over the
  vocabulary); reply token t scores the value of its own id read at position t-1, and the scores are
  averaged over the reply. Judging a token by what came before it is what a language model's hidden states
  are made for, so this head learns from far fewer pairs: on reverse_words (bench/posttrain.py) it reaches
  0.96 held-out pairwise accuracy in 100 steps where the scalar heads stay near 0.8 after 800.

It trains on (prompt, chosen, rejected) pairs with the Bradley-Terry loss::

    loss = -log sigmoid(r(prompt, chosen) - r(prompt, rejected))

Logged: ``loss``, pairwise ``accuracy`` (r(c) > r(r)) and the mean ``margin`` on train batches and on the
held-out pairs. The checkpoint's trainer_state has ``stage: reward`` and its config's ``reward.pool``;
``load_reward_model`` and ``score`` below load and apply it (GRPO's reward-model rewards, ``smelter chat``).
"""

from __future__ import annotations

import sys

import torch

from pipelines.errors import UserError
from train.stage import StageTrainer, chunks, stage_main


def scores_of(model, tokens: torch.Tensor, last: torch.Tensor, first: torch.Tensor | None = None,
              pool: str = "last") -> torch.Tensor:
    """[B] scores of right-padded rows whose reply spans positions first..last.

    ``last``: the value head's output at ``last``. ``mean``: its mean over the reply. ``token``: the output
    has one value per vocabulary entry; reply token t is scored by the value of its id at position t-1
    (what the model makes of that token given everything before it), and the scores are averaged."""
    out = model(tokens)
    last = last.to(out.device)
    rows = torch.arange(len(last), device=out.device)
    if pool == "last":
        return out[rows, last, 0]
    cols = torch.arange(out.shape[1], device=out.device)[None]
    span = (cols >= first.to(out.device)[:, None]) & (cols <= last[:, None])
    if pool == "mean":
        values = out[..., 0]
    else:  # token: values[b, t] = out[b, t - 1, tokens[b, t]] (the first reply token follows the prompt)
        values = torch.zeros(out.shape[:2], device=out.device, dtype=out.dtype)
        values[:, 1:] = out[:, :-1].gather(-1, tokens[:, 1:, None].to(out.device))[..., 0]
    return (values * span).sum(1) / span.sum(1)


class RewardTrainer(StageTrainer):
    stage = "reward"

    def model_config(self, base):
        if self.cfg.reward.pool == "token":  # one value per vocabulary entry: an untied, zeroed output
            return base.with_(value_head=False, tie_embeddings=False)
        return base.with_(value_head=True, tie_embeddings=False)

    def new_output_head(self) -> bool:
        return self.init_state.get("stage") != "reward"

    def generates(self) -> bool:
        return False

    def _build_model(self, load_init: bool, mcfg=None) -> torch.nn.Module:
        model = super()._build_model(load_init, mcfg)
        if self.new_output_head():  # every reply starts at score 0 (init_weights zeroes a value head only)
            with torch.no_grad():
                model.output.weight.zero_()
        return model

    def load_data(self) -> None:
        self.load_pair_data()

    def _stats(self, pairs, scale: float | None) -> torch.Tensor:
        """Sums over ``pairs`` of (loss, accuracy, margin); backward of loss_sum * scale when given."""
        from train.losses import bradley_terry_loss
        from train.posttrain_data import pair_rows, score_batch

        prompts, replies = pair_rows(pairs)
        tokens, last = score_batch(prompts, replies, self.template.pad_id)
        first = torch.tensor([len(p) for p in prompts])
        r = scores_of(self.model, tokens.to(self.device), last, first, self.cfg.reward.pool)
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
        sums = self.heldout_sums(len(self.heldout), lambda rows: self._stats([self.heldout[i] for i in rows], None))
        return self._named(sums, len(self.heldout))


# ---------------------------------------------------------------------------------------------------------
# using a trained reward model (GRPO)


def is_reward_model(trainer_state: dict) -> bool:
    """Whether a checkpoint's trainer_state is a reward model's (a value head, or the reward stage)."""
    return bool(trainer_state["model"].get("value_head")) or trainer_state.get("stage") == "reward"


def load_reward_model(path: str, device: str | torch.device = "cpu"):
    """(reward model in eval mode on one process, its ChatTemplate) from a reward checkpoint (a step-N
    folder or a root); ``model.reward_pool`` says how it scores (``score``)."""
    from train.chat import ChatTemplate, tokenizer_path_of
    from train.sample import load_model

    model, state = load_model(path, str(device))
    if not is_reward_model(state):
        raise UserError(f"{path}: not a reward model checkpoint (stage {state.get('stage', 'pretrain')}): train "
                        "one with `smelter train --stage reward`")
    model.reward_pool = ((state.get("config") or {}).get("reward") or {}).get("pool", "last")
    return model, ChatTemplate.from_tokenizer_file(tokenizer_path_of(state))


@torch.no_grad()
def score(model, template, prompt_ids_list: list[list[int]], reply_ids_list: list[list[int]],
          batch_size: int = 16) -> torch.Tensor:
    """[N] float32 scores of the (prompt, reply) pairs (replies end with <|end_of_turn|>: encode_response),
    pooled as the model was trained (``model.reward_pool``, set by load_reward_model)."""
    from train.posttrain_data import score_batch

    if len(prompt_ids_list) != len(reply_ids_list):
        raise ValueError("as many prompts as replies")
    device = next(model.parameters()).device
    out = []
    for idx in chunks(list(range(len(prompt_ids_list))), batch_size):
        tokens, last = score_batch([prompt_ids_list[i] for i in idx], [reply_ids_list[i] for i in idx],
                                   template.pad_id)
        first = torch.tensor([len(prompt_ids_list[i]) for i in idx])
        out.append(scores_of(model, tokens.to(device), last, first, getattr(model, "reward_pool", "last"))
                   .float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def main(argv: list[str] | None = None) -> int:
    return stage_main(RewardTrainer, argv)


if __name__ == "__main__":
    sys.exit(main())
