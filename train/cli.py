"""``smelter train --config train.yaml [--stage sft|dpo|reward|grpo] [--nproc N]``: pretrain from a
training plan, or run a post-training stage from a checkpoint.

The module run is ``train.pretrain`` by default, ``train.<stage>`` with ``--stage`` (or when the YAML has
a top-level ``stage`` key). With ``--nproc`` above 1 it starts ``torchrun --standalone --nproc_per_node N
-m <module>`` (one machine); otherwise it trains in this process. Multi-node jobs call torchrun themselves.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

from train import pretrain

EPILOG = """\
The training YAML (relative paths are relative to it):
  plan: ../../out/demo-plan                  a `smelter mix` plan folder
  model: {preset: small, n_layers: 4}        tiny | small | 124m | 350m | 1b, plus ModelConfig overrides
  parallel: {dp: -1, tp: 1}                  + sequence_parallel, activation_checkpointing, compile
  optimizer: {lr: 3e-3, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1}
  schedule: {warmup_steps: 20, kind: cosine, min_lr_ratio: 0.1}     cosine | wsd (decay_fraction) | constant
  batch: {global_batch_size: 16, micro_batch_size: 8}              accumulation = global / (micro x dp)
  max_steps: 300
  grad_clip: 1.0
  checkpoint: {dir: ../../out/demo-train, every: 100, keep_last: 2}
  log: {every: 10}                           metrics.jsonl in log.dir (default: checkpoint.dir)
  eval: {every: 100, batches: 4}             held-out loss per source
  device: auto                               auto | cpu | cuda
  dtype: fp32                                fp32 | bf16
  peak_flops: 989e12                         per device, for MFU (default from the device kind)
  seed: 0

A run resumes from the latest checkpoint in checkpoint.dir. Sample from a checkpoint with
`python -m train.sample --checkpoint DIR --prompt "..."`.

Post-training (--stage sft|dpo|reward|grpo; examples in train/examples/{sft,dpo,reward,grpo}.yaml):
  stage: sft                                 sft | dpo | reward | grpo
  init_from: ../../out/demo-train            the previous stage's checkpoint
  data: {train: t/sft.jsonl, heldout: h/sft.jsonl, heldout_prompts: h/prompts.jsonl}
  max_len: 256                               longest example (default: the model's max_seq_len)
  eval: {every: 50, max_examples: 200, at_start: false, max_new_tokens: 32}
  sft: {packing: true}   dpo: {beta: 0.1}   reward: {}   grpo: {...}
  + parallel, optimizer, schedule, batch, max_steps, grad_clip, checkpoint, log, device, dtype, seed
"""

STAGES = ("sft", "dpo", "reward", "grpo")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    pretrain.add_arguments(p)
    p.add_argument("--nproc", type=int, default=1, metavar="N", help="processes on this machine (torchrun)")
    p.add_argument("--stage", choices=STAGES, default=None,
                   help="post-training stage to run (module train.<stage>); default: the YAML's `stage` key, "
                        "else pretraining")


def module_of(args: argparse.Namespace) -> str:
    """train.pretrain, or train.<stage> for --stage (or a YAML with a top-level stage key)."""
    stage = getattr(args, "stage", None)
    if stage is None:
        from train.stage_config import peek_stage

        stage = peek_stage(args.config)
    return f"train.{stage}" if stage else "train.pretrain"


def torchrun_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", module_of(args), "--config", args.config]
    for assignment in args.overrides:
        cmd += ["--set", assignment]
    if args.stop_at:
        cmd += ["--stop-at", str(args.stop_at)]
    return cmd


def main(args: argparse.Namespace) -> int:
    if args.nproc > 1:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env.setdefault("OMP_NUM_THREADS", "1")
        return subprocess.call(torchrun_command(args), env=env)
    argv = ["--config", args.config] + [x for a in args.overrides for x in ("--set", a)]
    if args.stop_at:
        argv += ["--stop-at", str(args.stop_at)]
    module = module_of(args)
    if module == "train.pretrain":
        return pretrain.main(argv)
    return importlib.import_module(module).main(argv)
