"""Supervised fine-tuning on chat conversations: ``torchrun -m train.sft --config sft.yaml`` (also
``python -m train.sft`` and ``smelter train --stage sft``).

The loss is the mean next-token cross-entropy over the assistant tokens only (their content and
``<|end_of_turn|>``; every other position's label is IGNORE_INDEX), averaged over all labelled tokens of
the global batch. Conversations (train.posttrain_data.load_sft) are packed into rows of ``max_len``
positions (first-fit-decreasing, ``sft.packing: true``); each packed conversation attends only to itself
(block-diagonal causal attention from the rows' ``doc_ids``) and its rotary positions restart at 0, so a
packed row computes exactly what the conversations would alone. ``sft.packing: false`` gives one
conversation per row, padded to the longest of its micro-batch.

Evaluation (``kind: eval``): ``loss`` on the held-out conversations (``data.heldout``) and
``exact_match``, the accuracy of greedy replies to ``data.heldout_prompts`` under their verifiers.
"""

from __future__ import annotations

import sys

import torch

from train.stage import EpochOrder, StageTrainer, stage_main


def _trim(batch):
    """Drop trailing columns after the last labelled position of every row: attention is causal, so the
    kept positions compute the same, and a micro-batch of short rows runs short."""
    labelled = (batch.labels != -100).any(0).nonzero()
    width = int(labelled.max()) + 1 if len(labelled) else 1
    return [getattr(batch, f)[:, :width] for f in ("tokens", "labels", "doc_ids", "positions")]


class SFTTrainer(StageTrainer):
    stage = "sft"

    def load_data(self) -> None:
        from train.posttrain_data import load_sft, pack_sft

        cfg = self.cfg
        examples, report = load_sft(cfg.data.train, self.template, self.max_len)
        self.add_report("train", report, required=True)
        self.rows = pack_sft(examples, self.max_len, self.template.pad_id, packing=cfg.sft.packing)
        self.n_labels = [int((r.labels != -100).sum()) for r in self.rows]
        self.say(f"sft: {len(examples)} conversations in {len(self.rows)} rows of {self.max_len} "
                 f"({'packed' if cfg.sft.packing else 'one per row'}), {sum(self.n_labels):,} trained tokens")
        self.order = EpochOrder(len(self.rows), cfg.batch.global_batch_size, self.dp_rank, self.dp, cfg.seed)
        self.heldout_rows = []
        if cfg.data.heldout:
            held, report = load_sft(cfg.data.heldout, self.template, self.max_len)
            self.add_report("heldout", report)
            self.heldout_rows = pack_sft(held[:cfg.eval.max_examples], self.max_len, self.template.pad_id,
                                         packing=cfg.sft.packing)

    def _loss_sum(self, rows) -> torch.Tensor:
        """Summed cross-entropy over the labelled positions of ``rows`` (one forward)."""
        from train.losses import sft_loss_sum
        from train.posttrain_data import stack_rows

        tokens, labels, doc_ids, positions = (t.to(self.device) for t in _trim(stack_rows(rows)))
        select = labels != -100  # project only the labelled positions onto the vocabulary
        if self.cfg.sft.packing:
            logits = self.model(tokens, doc_ids=doc_ids, positions=positions, select=select)
        else:
            logits = self.model(tokens, select=select)
        return sft_loss_sum(logits, labels)[0]

    def train_step(self) -> dict[str, float]:
        mine, everyone = self.order.next()
        count = sum(self.n_labels[r] for r in everyone)  # labelled tokens of the whole global batch
        M = self.cfg.batch.micro_batch_size
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        for i in range(self.accum):
            self.set_grad_sync(i == self.accum - 1)
            part = mine[i * M:(i + 1) * M]
            loss_sum = self._loss_sum([self.rows[r] for r in part])
            (loss_sum / max(count, 1) * self.dp).backward()  # FSDP averages over dp: the global mean
            total += loss_sum.detach().double()
        grad_norm = self.optimizer_step()
        loss = float(self.sum_over_dp(total)) / max(count, 1)
        return {"loss": loss, "grad_norm": grad_norm, "tokens": float(count), "epoch": self.order.epoch}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.heldout_rows:
            def stats(idx: list[int]) -> torch.Tensor:  # (loss sum, labelled tokens) of a micro-batch
                rows = [self.heldout_rows[i] for i in idx]
                return torch.stack([self._loss_sum(rows).double(),
                                    torch.tensor(float(sum(int((r.labels != -100).sum()) for r in rows)),
                                                 dtype=torch.float64, device=self.device)])

            acc = self.heldout_sums(len(self.heldout_rows), stats)
            out["loss"] = float(acc[0] / acc[1].clamp(min=1))
        em = self.exact_match()
        if em is not None:
            out["exact_match"] = em
        return out


def main(argv: list[str] | None = None) -> int:
    return stage_main(SFTTrainer, argv)


if __name__ == "__main__":
    sys.exit(main())
