"""Pretraining from a training plan: ``torchrun --nproc_per_node=N -m train.pretrain --config train.yaml``.

Also runs as ``python -m train.pretrain --config train.yaml`` (one process) and as ``smelter train``.
One run: init torch.distributed, build the model (train.model) and initialize it from the seed, apply
the parallel layout (train.parallel.parallelize), build AdamW, resume from the latest checkpoint in
``checkpoint.dir`` when there is one, then train: per optimizer step, this rank's micro-batches
(gradient accumulation), clip, step. Rank 0 appends a JSON line per logged step to
``<log.dir>/metrics.jsonl`` (``kind: train``: step, phase, loss, lr, grad_norm, tokens, tokens_per_s,
mfu, memory_gb, elapsed_s) and per evaluation (``kind: eval``: loss per source on held-out samples and
their mean). Checkpoints every ``checkpoint.every`` steps and at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import resource
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from mixtures.reader import TrainingPlan
from pipelines.errors import UserError
from train import checkpoint
from train.config import TrainConfig, default_peak_flops
from train.config import load as load_config
from train.data import BatchStream, accumulation_steps, check_length, eval_sources, heldout_batches
from train.optim import build_optimizer, lr_at, set_lr

METRICS_FILE = "metrics.jsonl"


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("device: cuda, but torch sees no CUDA device")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def memory_gb(device: torch.device) -> float:
    """Peak memory: allocated CUDA memory on a GPU, the process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _mean_over_world(value: torch.Tensor, world: int) -> float:
    if world > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


class MetricsLog:
    """metrics.jsonl (and TensorBoard when installed) on rank 0; other ranks write nothing."""

    def __init__(self, cfg: TrainConfig, rank: int, resumed_step: int):
        self.active = rank == 0
        self.path = os.path.join(cfg.log.dir, METRICS_FILE)
        self.tb = None
        if not self.active:
            return
        os.makedirs(cfg.log.dir, exist_ok=True)
        if os.path.exists(self.path):  # drop what a stopped run logged after the checkpoint we resume from
            with open(self.path, encoding="utf-8") as fh:
                keep = [line for line in fh if line.strip() and json.loads(line).get("step", 0) <= resumed_step]
            with open(self.path + ".tmp", "w", encoding="utf-8") as fh:
                fh.writelines(keep)
            os.replace(self.path + ".tmp", self.path)
        if cfg.log.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                self.tb = SummaryWriter(os.path.join(cfg.log.dir, "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(f"{record['kind']}/{key}", value, record["step"])
                elif isinstance(value, dict):
                    for k, v in value.items():
                        self.tb.add_scalar(f"{record['kind']}/{key}/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Trainer:
    """The state of one run on one rank; ``run()`` trains to ``max_steps`` (or ``stop_at``)."""

    def __init__(self, cfg: TrainConfig):
        from train.model import Transformer
        from train.parallel import build_mesh, init_distributed, parallelize

        self.cfg = cfg
        wanted = None if cfg.device == "auto" else ("cuda" if str(cfg.device).startswith("cuda") else "cpu")
        self.rank, self.world, local_rank = init_distributed(device_type=wanted)
        self.device = resolve_device(cfg.device, local_rank)
        self.pcfg = cfg.parallel_config()
        try:
            self.dp, self.tp = self.pcfg.resolve(self.world)
        except ValueError as e:
            raise UserError(f"{cfg.origin}: parallel: {e}") from None
        self.plan = TrainingPlan(cfg.plan)
        tok = self.plan.manifest["tokenizer"]
        self.mcfg = cfg.build_model_config(tok["vocab_size"], self.plan.seq_len)
        if self.mcfg.max_seq_len < self.plan.seq_len:
            raise UserError(f"{cfg.origin}: model.max_seq_len {self.mcfg.max_seq_len} is below the plan's "
                            f"seq_len {self.plan.seq_len}")
        B, M = cfg.batch.global_batch_size, cfg.batch.micro_batch_size
        self.accum = accumulation_steps(B, M, self.dp)
        check_length(self.plan, B, cfg.max_steps)

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        with torch.device(self.device):
            model = Transformer(self.mcfg)
        model.init_weights(cfg.seed)
        # always through parallelize (one process too): bf16 mixed precision, activation checkpointing
        # and compile are applied there; with one process, fp32 and no flags the model is unchanged
        self.mesh = build_mesh(self.pcfg, self.world, self.device.type)
        self.model = parallelize(model, self.mesh, self.pcfg)
        self.optimizer = build_optimizer(self.model, cfg.optimizer, self.device.type)
        self.stream = BatchStream(self.plan, B, M, dp_rank=self.rank // self.tp, dp_size=self.dp)
        self.step, self.tokens = 0, 0
        self.tokens_per_step = B * self.plan.seq_len
        self.flops_per_token = self.mcfg.flops_per_token(self.plan.seq_len)
        self.peak = cfg.peak_flops or default_peak_flops(self.device.type, cfg.dtype)
        self.resumed_from = checkpoint.latest(cfg.checkpoint.dir)
        if self.resumed_from:
            state = checkpoint.load(self.resumed_from, self.model, self.optimizer)
            self.step, self.tokens = state["step"], state["tokens"]
            self.stream.load_state_dict(state["data"])
        self.log = MetricsLog(cfg, self.rank, self.step)
        self.last_loss: float | None = None

    def say(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    # ----------------------------------------------------------------------------------------------

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of a ``[M, seq_len + 1]`` batch (fp32 logits)."""
        batch = batch.to(self.device, non_blocking=True)
        logits = self.model(batch[:, :-1])
        return F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())

    def train_step(self) -> tuple[torch.Tensor, float]:
        """One optimizer step over this rank's micro-batches; -> (mean loss on this rank, grad norm)."""
        from train.parallel import clip_grad_norm_

        micro = self.stream.next()
        total = torch.zeros((), device=self.device)
        sync = getattr(self.model, "set_requires_gradient_sync", None)
        for i, batch in enumerate(micro):
            if sync is not None and self.accum > 1:
                sync(i == len(micro) - 1)  # FSDP2: reduce-scatter the gradients once, after the last
            loss = self.loss(batch)
            (loss / self.accum).backward()
            total += loss.detach()
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total / self.accum, float(grad_norm)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss per source over its first held-out samples (``eval.batches`` micro-batches per dp
        rank), token-weighted across ranks."""
        self.model.eval()
        out = {}
        M = self.cfg.batch.micro_batch_size
        for source in eval_sources(self.plan):
            acc = torch.zeros(2, device=self.device, dtype=torch.float64)  # loss sum, samples
            for batch in heldout_batches(self.plan, source, self.cfg.eval.batches, M, self.rank // self.tp, self.dp):
                if batch is None:  # padding forward pass: every rank must join sharded forwards
                    self.loss(torch.zeros(1, self.plan.seq_len + 1, dtype=torch.int64))
                    continue
                acc[0] += self.loss(batch).double() * len(batch)
                acc[1] += len(batch)
            if self.world > 1:
                dist.all_reduce(acc)  # tp ranks add the same numbers: the ratio is unchanged
            out[source] = float(acc[0] / acc[1])
        self.model.train()
        return out

    def save(self) -> str:
        state = {"step": self.step, "scheduler_step": self.step, "tokens": self.tokens,
                 "data": self.stream.state_dict(), "world": self.world, "dp": self.dp, "tp": self.tp,
                 "model": dataclasses.asdict(self.mcfg), "plan": self.cfg.plan, "seq_len": self.plan.seq_len,
                 "last_loss": self.last_loss, "config": self.cfg.to_json()}
        path = checkpoint.save(self.cfg.checkpoint.dir, self.step, self.model, self.optimizer, state,
                               self.cfg.checkpoint.keep_last)
        self.say(f"checkpoint: {path}")
        return path

    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until ``max_steps`` (or until step ``stop_at``, with a checkpoint there)."""
        cfg = self.cfg
        end = min(cfg.max_steps, stop_at) if stop_at else cfg.max_steps
        n_params = sum(p.numel() for p in self.model.parameters())
        self.say(f"train: {self.mcfg.name} model, {n_params:,} parameters, {self.world} processes (dp {self.dp} x "
                 f"tp {self.tp}), {self.device.type}, {cfg.dtype}; steps {self.step} -> {end} of {cfg.max_steps}, "
                 f"{cfg.batch.global_batch_size} x {self.plan.seq_len} tokens per step (accumulation {self.accum})"
                 + (f"; resumed from {self.resumed_from}" if self.resumed_from else ""))
        started = time.perf_counter()
        mark, mark_step = started, self.step
        evals: dict[str, float] = {}
        while self.step < end:
            phase = self.stream.phase
            lr = lr_at(self.step, cfg.optimizer.lr, cfg.schedule, cfg.max_steps)
            set_lr(self.optimizer, lr)
            loss, grad_norm = self.train_step()
            self.step += 1
            self.tokens += self.tokens_per_step
            if self.step % cfg.log.every == 0 or self.step == end:
                self.last_loss = _mean_over_world(loss, self.world)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.perf_counter()
                tps = (self.step - mark_step) * self.tokens_per_step / max(now - mark, 1e-9)
                mark, mark_step = now, self.step
                mfu = self.flops_per_token * tps / (self.peak * self.world)
                record = {"kind": "train", "step": self.step, "phase": phase, "loss": self.last_loss, "lr": lr,
                          "grad_norm": grad_norm, "tokens": self.tokens, "tokens_per_s": tps, "mfu": mfu,
                          "memory_gb": memory_gb(self.device), "elapsed_s": now - started}
                self.log.write(record)
                self.say(f"step {self.step:>6}/{cfg.max_steps} {phase:>8} | loss {self.last_loss:.4f} | lr {lr:.2e} | "
                         f"grad {grad_norm:.3f} | {tps:,.0f} tok/s | mfu {100 * mfu:.2f}%")
            at_end = self.step == end
            if (cfg.eval.every and self.step % cfg.eval.every == 0) or (at_end and self.step == cfg.max_steps):
                evals = self.evaluate()
                if evals:
                    mean = sum(evals.values()) / len(evals)
                    self.log.write({"kind": "eval", "step": self.step, "eval_loss": evals, "eval_loss_mean": mean})
                    self.say(f"eval step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in evals.items())
                             + f" | mean {mean:.4f}")
            if (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0) or at_end:
                self.save()
        self.log.close()
        return {"step": self.step, "loss": self.last_loss, "eval": evals,
                "seconds": time.perf_counter() - started}


def train(cfg: TrainConfig, stop_at: int | None = None) -> dict[str, Any]:
    """Build a Trainer for ``cfg`` and run it; tears the process group down afterwards."""
    try:
        return Trainer(cfg).run(stop_at)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="TRAIN.yaml", help="the training config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by its dotted key, e.g. --set max_steps=50 (repeatable)")
    p.add_argument("--stop-at", type=int, metavar="STEP",
                   help="stop after this step with a checkpoint (the schedule still runs to max_steps); "
                        "the next run resumes there")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.pretrain", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        train(cfg, args.stop_at)
    except UserError as e:
        print(f"smelter train: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
