"""``smelter train --config train.yaml [--nproc N]``: pretrain from a training plan.

With ``--nproc`` above 1 it starts ``torchrun --standalone --nproc_per_node N -m train.pretrain`` (one
machine); otherwise it trains in this process. Multi-node jobs call torchrun themselves.
"""

from __future__ import annotations

import argparse
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
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    pretrain.add_arguments(p)
    p.add_argument("--nproc", type=int, default=1, metavar="N", help="processes on this machine (torchrun)")


def torchrun_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "train.pretrain", "--config", args.config]
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
    return pretrain.main(argv)
