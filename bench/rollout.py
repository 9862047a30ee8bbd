"""GRPO's sampler: one prompt's group per generate call against many prompts' groups per call.

    .venv/bin/python bench/rollout.py [--checkpoint out/posttrain-bench/sft] [--prompts 32] [--group 8]

Samples ``--group`` replies to each of ``--prompts`` held-out reverse_words prompts (temperature 0.7,
at most 12 new tokens, the KV cache) from a checkpoint of the post-training chain (bench/posttrain.py),
first one prompt per call (``rollout_batch`` = group size), then all of them in one call
(``train.rollout.generate_groups``), checks that both draw the same replies (each prompt's noise has its
own seed) and prints the seconds of each, best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=os.path.join(ROOT, "out", "posttrain-bench", "sft"))
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch

    from train.chat import ChatTemplate, tokenizer_path_of
    from train.rollout import generate_groups, sample_seed
    from train.sample import load_model
    from train.tasks import make_task

    model, state = load_model(args.checkpoint, "cpu")
    template = ChatTemplate.from_tokenizer_file(tokenizer_path_of(state))
    task = make_task("reverse_words", min_words=3, max_words=4)
    rng = __import__("random").Random(0)
    prompts = [template.encode_prompt(task.draw(rng).prompt) for _ in range(args.prompts)]
    seeds = [sample_seed(0, 0, i) for i in range(len(prompts))]
    kw = dict(temperature=0.7, stop_ids=template.stop_ids, pad_id=template.pad_id)

    def one_at_a_time():
        return [generate_groups(model, [p], args.group, 12, seeds=[s], **kw)[0]
                for p, s in zip(prompts, seeds, strict=True)]

    def batched():
        return generate_groups(model, prompts, args.group, 12, seeds=seeds, **kw)

    times, outs = {}, {}
    for name, fn in (("one prompt per call", one_at_a_time), ("all prompts in one call", batched)):
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            outs[name] = fn()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    same = outs["one prompt per call"] == outs["all prompts in one call"]
    print(f"{len(prompts)} prompts x {args.group} replies, {torch.get_num_threads()} threads, {args.checkpoint}")
    print("| sampler | seconds | replies/s |\n|---|---|---|")
    n = len(prompts) * args.group
    for name, sec in times.items():
        print(f"| {name} | {sec:.2f} | {n / sec:.0f} |")
    print(f"speed-up {times['one prompt per call'] / times['all prompts in one call']:.1f}x; same replies: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
