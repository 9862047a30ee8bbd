"""Direct preference optimization: ``torchrun -m train.dpo --config dpo.yaml`` (also ``python -m
train.dpo`` and ``smelter train --stage dpo``).

On (prompt, chosen, rejected) pairs (train.posttrain_data.load_pairs), the sigmoid DPO loss (Rafailov et
al. 2023)::

    loss = -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r))))     beta = dpo.beta

plus, with ``dpo.sft_weight`` = a > 0, a * (-log pi(c) / |c|): the chosen reply's per-token negative
log-likelihood (RPO, Pang et al. 2024), which keeps plain DPO from lowering the likelihood of both replies
until greedy answers degrade. log pi(x) is the summed log-probability of the reply's tokens (its content
and <|end_of_turn|>) after the prompt, under the policy being trained and under the reference, the frozen
init model. The
reference log-probabilities of every train and held-out pair are computed once before training (with the
policy itself at step 0, when it still equals the init weights) and kept in ``<checkpoint.dir>/
ref_logprobs.pt`` so a resumed run does not recompute them.

Logged per step and on held-out pairs: ``loss``, the implicit rewards ``chosen_reward`` / ``rejected_reward``
(beta * (log pi - log ref)), their ``margin``, the preference ``accuracy`` (margin > 0; exactly 0 at step 0,
when policy = reference), ``chosen_nll`` (-log pi(c) per token) and ``logp_accuracy`` (log pi(c) >
log pi(r): does the model itself prefer the chosen reply, a figure that is meaningful before training too).
With ``data.heldout_prompts`` the
evaluation also reports greedy ``exact_match``.
"""

from __future__ import annotations

import hashlib
import os
import sys

import torch

from train.stage import StageTrainer, stage_main

REF_CACHE = "ref_logprobs.pt"


class DPOTrainer(StageTrainer):
    stage = "dpo"

    def load_data(self) -> None:
        self.load_pair_data()
        self.ref: dict[str, torch.Tensor] = {}

    # -- log-probabilities ---------------------------------------------------------------------------

    def logprobs(self, model, pairs, lengths: bool = False):
        """(log p(chosen | prompt), log p(rejected | prompt)) [k] each, chosen and rejected in one forward;
        with ``lengths`` also the chosen replies' token counts [k]."""
        from train.losses import selected_sequence_logprobs
        from train.posttrain_data import pair_rows, prompt_response_batch

        prompts, replies = pair_rows(pairs)
        tokens, labels = prompt_response_batch(prompts, replies, self.template.pad_id)
        tokens, labels = tokens.to(self.device), labels.to(self.device)
        logp = selected_sequence_logprobs(model(tokens, select=labels != -100), labels)
        if lengths:
            return logp[:len(pairs)], logp[len(pairs):], (labels[:len(pairs)] != -100).sum(1)
        return logp[:len(pairs)], logp[len(pairs):]

    @torch.no_grad()
    def _all_logprobs(self, model, pairs) -> torch.Tensor:
        """[N, 2] (chosen, rejected) log-probabilities of every pair, computed in layout-independent
        chunks shared out over the dp ranks; every rank gets them all."""
        out = torch.zeros(len(pairs), 2, device=self.device, dtype=torch.float64)
        for chunk in self.dealt_chunks(len(pairs), self.cfg.batch.micro_batch_size):
            c, r = self.logprobs(model, [pairs[i] for i in (chunk or [0])])
            if chunk is not None:
                out[chunk, 0], out[chunk, 1] = c.double(), r.double()
        return self.sum_over_dp(out)

    def _cache_key(self) -> str:
        h = hashlib.sha256()
        for part in (self.init_path, self.cfg.data.train, str(self.cfg.data.heldout), str(len(self.pairs)),
                     str(len(self.heldout)), str(self.cfg.batch.micro_batch_size)):
            h.update(part.encode() + b"\0")
        return h.hexdigest()

    def before_training(self) -> None:
        """The reference log-probabilities of every train and held-out pair, once."""
        path = os.path.join(self.cfg.checkpoint.dir, REF_CACHE)
        if os.path.isfile(path):
            cached = torch.load(path, map_location=self.device)
            if cached.get("key") == self._cache_key():
                self.ref = {"train": cached["train"], "heldout": cached["heldout"]}
                self.say(f"dpo: reference log-probabilities from {path}")
                return
        model = self.model if self.step == 0 else self.load_reference()
        was_training = model.training
        model.eval()
        self.ref = {"train": self._all_logprobs(model, self.pairs),
                    "heldout": self._all_logprobs(model, self.heldout) if self.heldout else
                    torch.zeros(0, 2, dtype=torch.float64, device=self.device)}
        model.train(was_training)
        if model is not self.model:
            del model
        if self.rank == 0:
            os.makedirs(self.cfg.checkpoint.dir, exist_ok=True)
            torch.save({"key": self._cache_key(), **{k: v.cpu() for k, v in self.ref.items()}}, path + ".tmp")
            os.replace(path + ".tmp", path)
        self.say(f"dpo: reference log-probabilities of {len(self.pairs)} train and {len(self.heldout)} "
                 f"held-out pairs computed")

    # -- steps ---------------------------------------------------------------------------------------

    def _stats(self, pairs, ref: torch.Tensor, scale: float | None) -> torch.Tensor:
        """Sums over ``pairs`` of (loss, chosen reward, rejected reward, margin, accuracy, logp accuracy,
        chosen per-token NLL); backward of loss_sum * scale when scale is given. The loss is DPO's plus
        ``dpo.sft_weight`` times the chosen reply's per-token NLL."""
        from train.losses import dpo_loss

        pi_c, pi_r, n_c = self.logprobs(self.model, pairs, lengths=True)
        ref = ref.to(pi_c.dtype)
        loss, rc, rr = dpo_loss(pi_c, pi_r, ref[:, 0], ref[:, 1], self.cfg.dpo.beta)
        nll = -pi_c / n_c
        if self.cfg.dpo.sft_weight:
            loss = loss + self.cfg.dpo.sft_weight * nll
        if scale is not None:
            (loss.sum() * scale).backward()
        margin = rc - rr
        return torch.stack([loss.detach().sum(), rc.sum(), rr.sum(), margin.sum(), (margin > 0).float().sum(),
                            (pi_c.detach() > pi_r.detach()).float().sum(), nll.detach().sum()]).double()

    @staticmethod
    def _named(sums: torch.Tensor, n: int) -> dict[str, float]:
        names = ("loss", "chosen_reward", "rejected_reward", "margin", "accuracy", "logp_accuracy", "chosen_nll")
        return {k: float(v) / max(n, 1) for k, v in zip(names, sums, strict=True)}

    def train_step(self) -> dict[str, float]:
        mine, everyone = self.order.next()
        n, M = len(everyone), self.cfg.batch.micro_batch_size
        sums = torch.zeros(7, device=self.device, dtype=torch.float64)
        for i in range(self.accum):
            self.set_grad_sync(i == self.accum - 1)
            part = mine[i * M:(i + 1) * M]
            sums += self._stats([self.pairs[r] for r in part], self.ref["train"][part], self.dp / n)
        grad_norm = self.optimizer_step()
        return {**self._named(self.sum_over_dp(sums), n), "grad_norm": grad_norm, "epoch": self.order.epoch}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.heldout:
            sums = self.heldout_sums(len(self.heldout), lambda rows: self._stats(
                [self.heldout[i] for i in rows], self.ref["heldout"][rows], None))
            out = self._named(sums, len(self.heldout))
        em = self.exact_match()
        if em is not None:
            out["exact_match"] = em
        return out


def main(argv: list[str] | None = None) -> int:
    return stage_main(DPOTrainer, argv)


if __name__ == "__main__":
    sys.exit(main())
