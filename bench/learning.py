"""Did the model learn more than token frequencies? Its held-out loss beside the unigram baselines.

The unigram entropy of the training tokens (what a model that knows only how often each token occurs
would score on them) and the cross-entropy of that unigram model on the held-out samples, beside the
held-out loss per source from the run's ``metrics.jsonl``. All in nats per token, like the loss.

    .venv/bin/python bench/learning.py out/demo-plan out/demo-train/metrics.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mixtures.reader import TrainingPlan  # noqa: E402


def entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("plan")
    ap.add_argument("metrics", help="the training run's metrics.jsonl")
    ap.add_argument("--eval-samples", type=int, default=16,
                    help="held-out samples per source the run's evaluation reads: eval.batches x "
                         "micro_batch_size x data-parallel ranks (default 16, the demo's 4 x 4 x 1)")
    args = ap.parse_args()
    plan = TrainingPlan(args.plan)
    lines = [json.loads(line) for line in open(args.metrics)]
    train = [r for r in lines if r.get("kind") == "train"]
    evals = [r for r in lines if r.get("kind") == "eval"]
    if not train or not evals:
        sys.exit(f"{args.metrics}: no train and eval lines")
    steps = train[-1]["step"]
    read = min(plan.num_samples, round(train[-1]["tokens"] / plan.seq_len)) if "tokens" in train[-1] else plan.num_samples
    vocab = plan.manifest["tokenizer"]["vocab_size"]
    counts = np.zeros(vocab, np.int64)
    for n in range(read):
        counts += np.bincount(plan.sample(n)[1:], minlength=vocab)  # the labels: what the loss predicts
    unigram = counts / counts.sum()
    print(f"run: {steps} steps, {read:,} training samples read ({counts.sum():,} label tokens)")
    print(f"unigram entropy of the training tokens: {entropy(counts):.3f} nats\n")
    print("| source | held-out loss (last evaluation) | unigram cross-entropy, same samples | below by |")
    print("|---|---:|---:|---:|")
    last = evals[-1]
    losses = last.get("eval_loss", {})
    for source in plan.sources:
        k = min(args.eval_samples, plan.heldout_samples(source))
        if not k or source not in losses:
            continue
        h = np.zeros(vocab, np.int64)
        for i in range(k):
            h += np.bincount(plan.heldout_sample(source, i)[1:], minlength=vocab)
        cross = float(-(h * np.log(np.maximum(unigram, 1e-12))).sum() / h.sum())
        print(f"| {source} | {losses[source]:.3f} | {cross:.3f} | {cross - losses[source]:.3f} |")
    if "eval_loss_mean" in last:
        print(f"\nmean held-out loss at step {last.get('step')}: {last['eval_loss_mean']:.3f} nats "
              f"(unigram entropy of the training tokens {entropy(counts):.3f})")


if __name__ == "__main__":
    main()
