"""The post-training trainer base: everything SFT, DPO, the reward model and GRPO share.

``StageTrainer(cfg)`` (cfg: train.stage_config.StageConfig) does what the pretraining trainer does,
starting from a checkpoint instead of a random init:

1. join torch.distributed (gloo on CPU, NCCL on CUDA; a one-process group without torchrun), build the
   ("dp", "tp") mesh from ``parallel``;
2. read the init checkpoint (``init_from``: a step-N folder or a root): its model config and its tokenizer
   (``tokenizer`` or train.chat.tokenizer_path_of(trainer_state)) -> ``self.template`` (ChatTemplate);
3. build the model, parallelize it (train.parallel), load the init weights into it (DCP: any saving
   layout), build AdamW (train.optim);
4. ``load_data()`` (subclass): read the stage's JSONL, report bad rows once (printed, ``kind: data`` in
   metrics.jsonl), a train file with no usable row is a one-line UserError;
5. resume from the latest checkpoint in ``checkpoint.dir`` when there is one (weights, optimizer, RNG, step,
   data position: exact);
6. ``run()``: per step, the learning rate of the schedule, ``train_step()`` (subclass, returns the step's
   metrics, already averaged over the ranks), a ``kind: train`` line every ``log.every`` steps,
   ``evaluate()`` (subclass) every ``eval.every`` steps and at the end (``kind: eval``), checkpoints
   every ``checkpoint.every`` steps and at the end.

Data order (``EpochOrder``): a seeded permutation of the rows per epoch; global batch g takes positions
[g*B, (g+1)*B) of the concatenated epoch orders and data-parallel rank r its contiguous share, so one and
two processes see the same global batches and the state is one number (rows consumed).

Exact means across ranks: a loss that is a mean over the global batch (tokens for SFT, pairs for DPO and
the reward model) is computed as ``sum over this rank's items / global count * dp`` before backward: FSDP
averages gradients over dp, so the gradient is that of the global mean whatever the layout, and the
micro-batches of one optimizer step always hold the same rows (chunks of ``micro_batch_size`` in order),
so 1 and 2 processes compute the same numbers.

Generation on a sharded model (``greedy_generate``): every rank runs the same number of forward passes
(FSDP gathers parameters in each); prompts are dealt to dp ranks in chunks, left-padded with their own
document id so the batch behaves as separate sequences, and decoding stops when every rank is done.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipelines.errors import UserError
from train import checkpoint
from train.optim import build_optimizer, lr_at, set_lr
from train.pretrain import MetricsLog, memory_gb, resolve_device
from train.stage_config import StageConfig


class EpochOrder:
    """Which rows of an in-memory dataset each optimizer step reads (see the module docstring)."""

    def __init__(self, n_rows: int, global_batch: int, dp_rank: int = 0, dp: int = 1, seed: int = 0,
                 consumed: int = 0):
        if n_rows < 1:
            raise ValueError("no rows")
        self.n_rows, self.global_batch, self.dp_rank, self.dp, self.seed = n_rows, global_batch, dp_rank, dp, seed
        self.consumed = consumed
        self._perm: tuple[int, list[int]] | None = None

    def permutation(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n_rows, generator=gen).tolist())
        return self._perm[1]

    def global_rows(self, step: int) -> list[int]:
        """The row numbers of global batch ``step`` (all ranks)."""
        first = step * self.global_batch
        return [self.permutation(p // self.n_rows)[p % self.n_rows] for p in range(first, first + self.global_batch)]

    @property
    def step(self) -> int:
        return self.consumed // self.global_batch

    @property
    def epoch(self) -> float:
        return self.consumed / self.n_rows

    def next(self) -> tuple[list[int], list[int]]:
        """(this rank's rows, all rows) of the next global batch."""
        rows = self.global_rows(self.step)
        share = self.global_batch // self.dp
        self.consumed += self.global_batch
        return rows[self.dp_rank * share:(self.dp_rank + 1) * share], rows

    def state_dict(self) -> dict[str, int]:
        return {"rows_consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state["rows_consumed"])


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class StageTrainer:
    """Base of the post-training stages; subclasses set ``stage`` and implement ``load_data``,
    ``train_step`` and ``evaluate`` (and optionally ``model_config``, ``before_training``,
    ``data_state`` / ``load_data_state``)."""

    stage = "base"

    def __init__(self, cfg: StageConfig):
        from train.chat import ChatTemplate, tokenizer_path_of
        from train.model import ModelConfig
        from train.parallel import build_mesh, init_distributed

        if cfg.stage is not None and cfg.stage != self.stage:
            raise UserError(f"{cfg.origin}: stage: the config is for {cfg.stage!r}, run with "
                            f"`smelter train --stage {cfg.stage}` (or python -m train.{cfg.stage})")
        self.cfg = cfg
        wanted = None if cfg.device == "auto" else cfg.device
        self.rank, self.world, local_rank = init_distributed(device_type=wanted)
        self.device = resolve_device(cfg.device, local_rank)
        self.pcfg = cfg.parallel_config()
        try:
            self.dp, self.tp = self.pcfg.resolve(self.world)
        except ValueError as e:
            raise UserError(f"{cfg.origin}: parallel: {e}") from None
        self.mesh = build_mesh(self.pcfg, self.world, self.device.type)
        self.dp_rank = self.mesh["dp"].get_local_rank()
        self.dp_group = self.mesh["dp"].get_group()

        # the init checkpoint: model shape and tokenizer
        self.init_path = checkpoint.resolve(cfg.init_from)
        self.init_state = checkpoint.read_state(self.init_path)
        try:
            self.mcfg = self.model_config(ModelConfig(**self.init_state["model"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{self.init_path}: cannot build the model of this checkpoint: {e}") from None
        self.tokenizer_path = cfg.tokenizer or tokenizer_path_of(self.init_state)
        self.template = ChatTemplate.from_tokenizer_file(self.tokenizer_path)
        if self.template.vocab_size > self.mcfg.vocab_size:
            raise UserError(f"{self.tokenizer_path}: the tokenizer has {self.template.vocab_size} tokens but the "
                            f"model of {self.init_path} only {self.mcfg.vocab_size}")
        self.max_len = cfg.max_len or self.mcfg.max_seq_len
        if self.max_len > self.mcfg.max_seq_len:
            raise UserError(f"{cfg.origin}: max_len {self.max_len} exceeds the model's max_seq_len "
                            f"{self.mcfg.max_seq_len}")
        B, M = cfg.batch.global_batch_size, cfg.batch.micro_batch_size
        if B % (M * self.dp):
            raise UserError(f"{cfg.origin}: batch.global_batch_size {B} is not a multiple of "
                            f"batch.micro_batch_size {M} x {self.dp} data-parallel ranks")
        self.accum = B // (M * self.dp)

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        self.resumed_from = checkpoint.latest(cfg.checkpoint.dir)
        self.model = self._build_model(load_init=not self.resumed_from)
        self.optimizer = build_optimizer(self.model, cfg.optimizer, self.device.type)
        self.step = 0
        self.last_metrics: dict[str, float] = {}
        self._reports: list[tuple[str, Any]] = []
        self.heldout_prompts: list = []
        self.load_data()
        if cfg.data.heldout_prompts and self.generates():
            from train.posttrain_data import load_prompts

            prompts, report = load_prompts(cfg.data.heldout_prompts, self.template, self.max_len)
            self.add_report("heldout_prompts", report)
            self.heldout_prompts = prompts[:cfg.eval.max_examples]
        if self.resumed_from:
            state = checkpoint.load(self.resumed_from, self.model, self.optimizer)
            self.step = state["step"]
            self.load_data_state(state.get("data") or {})
        self.log = MetricsLog(cfg, self.rank, self.step)
        if not self.resumed_from:
            for what, report in self._reports:
                self.log.write({"kind": "data", "step": 0, "stage": self.stage, "file": what, **report.to_json()})

    # -- hooks for the stages -------------------------------------------------------------------------

    def model_config(self, base):
        """The ModelConfig to train, from the init checkpoint's (the reward model adds its value head)."""
        return base

    def new_output_head(self) -> bool:
        """Whether the output projection is new (kept as ``init_weights`` made it) rather than loaded from
        ``init_from``: a reward model started from a language model."""
        return bool(self.mcfg.value_head and not self.init_state["model"].get("value_head", False))

    def generates(self) -> bool:
        """Whether the model can generate text (exact-match evaluation); False for a reward model."""
        return not self.mcfg.value_head

    def load_data(self) -> None:
        raise NotImplementedError

    def before_training(self) -> None:
        """Runs once at the start of ``run()`` (after a resume), on every rank."""

    def train_step(self) -> dict[str, float]:
        """One optimizer step; -> metrics averaged over the ranks (must include ``loss``)."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics (every rank calls it; all get the same numbers)."""
        return {}

    def load_pair_data(self) -> None:
        """DPO and the reward model: ``self.pairs`` (data.train, required), ``self.heldout`` (the first
        eval.max_examples of data.heldout) and ``self.order`` over the pairs."""
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

    def data_state(self) -> dict[str, Any]:
        order = getattr(self, "order", None)
        return order.state_dict() if order is not None else {}

    def load_data_state(self, state: dict[str, Any]) -> None:
        order = getattr(self, "order", None)
        if order is not None and state:
            order.load_state_dict(state)

    # -- model ----------------------------------------------------------------------------------------

    def _build_model(self, load_init: bool, mcfg=None) -> torch.nn.Module:
        from train.model import Transformer
        from train.parallel import parallelize

        with torch.device(self.device):
            model = Transformer(mcfg or self.mcfg)
        model.init_weights(self.cfg.seed)  # rotary tables, and the new value head of a reward model
        model = parallelize(model, self.mesh, self.pcfg)
        if load_init:
            self._load_init_weights(model)
        return model

    def _load_init_weights(self, model: torch.nn.Module) -> None:
        """The init checkpoint's weights, whatever layout saved them. A reward model started from a
        language model takes the backbone only: its value head is new."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            set_model_state_dict,
        )

        state = get_model_state_dict(model)
        if self.new_output_head():
            state.pop("output.weight", None)
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
            warnings.simplefilter("ignore", UserWarning)
            dcp.load({"model": state}, checkpoint_id=self.init_path)
        set_model_state_dict(model, state, options=StateDictOptions(strict=False))

    def load_reference(self) -> torch.nn.Module:
        """A frozen copy of the init weights in the same parallel layout, in eval mode (DPO, GRPO)."""
        ref = self._build_model(load_init=True)
        ref.requires_grad_(False)
        return ref.eval()

    # -- collectives ----------------------------------------------------------------------------------

    def mean_over_world(self, value: torch.Tensor) -> float:
        """The mean of a scalar over all ranks (tp ranks hold equal values: the mean is unchanged)."""
        value = value.detach().to(self.device, torch.float64).clone()
        if self.world > 1:
            dist.all_reduce(value)
            value /= self.world
        return float(value)

    def sum_over_dp(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of a tensor over the data-parallel ranks (each dp rank holds its own rows)."""
        value = value.detach().clone()
        if self.dp > 1:
            dist.all_reduce(value, group=self.dp_group)
        return value

    def set_grad_sync(self, last: bool) -> None:
        """FSDP2: reduce-scatter the gradients only after the last micro-batch of a step."""
        sync = getattr(self.model, "set_requires_gradient_sync", None)
        if sync is not None and self.accum > 1:
            sync(last)

    def optimizer_step(self) -> float:
        """Clip (``grad_clip``, 0 = off), step, zero the gradients; -> the norm before clipping."""
        from train.parallel import clip_grad_norm_

        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        norm = clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @torch.no_grad()
    def heldout_sums(self, n_items: int, stats) -> torch.Tensor:
        """The sum over held-out items 0..n_items-1 of ``stats(indices)`` (a tensor of sums for one
        micro-batch), in eval mode, the micro-batches dealt over the dp ranks (``dealt_chunks``: a rank
        with nothing left runs item 0 and drops it); every rank gets the total, in float64."""
        self.model.eval()
        total: torch.Tensor | None = None
        try:
            for chunk in self.dealt_chunks(n_items, self.cfg.batch.micro_batch_size):
                got = stats(chunk or [0]).to(self.device, torch.float64)
                got = got if chunk is not None else torch.zeros_like(got)
                total = got if total is None else total + got
        finally:
            self.model.train()
        return self.sum_over_dp(total)

    def dealt_chunks(self, n_items: int, size: int) -> list[list[int] | None]:
        """Items 0..n_items-1 in chunks of ``size`` dealt round-robin to the dp ranks: this rank's chunks
        (item indices), padded with None so every rank gets the same number (run a dummy forward for
        None: sharded models need every rank in every forward). Chunks do not depend on the layout, so
        batched numbers are the same for 1 and 2 processes."""
        all_chunks = chunks(list(range(n_items)), size)
        rounds = -(-len(all_chunks) // self.dp)
        return [all_chunks[c] if (c := r * self.dp + self.dp_rank) < len(all_chunks) else None
                for r in range(rounds)]

    # -- generation -----------------------------------------------------------------------------------

    @torch.no_grad()
    def greedy_generate(self, prompts: list[list[int]], max_new_tokens: int,
                        batch_size: int | None = None) -> list[list[int]]:
        """Greedy continuations of every prompt (every rank calls it with the same list and gets all the
        results): the new tokens up to and excluding the first stop id (<|end_of_turn|>, EOD)."""
        from train.model import KVCache

        if not prompts:
            return []
        size = batch_size or self.cfg.batch.micro_batch_size
        longest = max(len(p) for p in prompts)
        steps = min(max_new_tokens, self.mcfg.max_seq_len - longest)
        stop = torch.tensor(list(self.template.stop_ids), device=self.device)
        model = self.model
        was_training = model.training
        model.eval()
        results: dict[int, list[int]] = {}
        try:
            for chunk in self.dealt_chunks(len(prompts), size):
                rows = chunk if chunk is not None else [0]
                batch = [prompts[i] for i in rows]
                width = max(len(p) for p in batch)
                n = len(batch)
                tokens = torch.full((n, width), self.template.pad_id, dtype=torch.long)
                doc = torch.zeros((n, width), dtype=torch.long)
                pos = torch.zeros((n, width), dtype=torch.long)
                for b, p in enumerate(batch):  # left padding: every prompt ends at the last column
                    tokens[b, width - len(p):] = torch.tensor(p)
                    doc[b, width - len(p):] = 1
                    pos[b, width - len(p):] = torch.arange(len(p))
                lens = torch.tensor([len(p) for p in batch], device=self.device)
                tokens, doc, pos = tokens.to(self.device), doc.to(self.device), pos.to(self.device)
                cache = KVCache(self.mcfg, n, width + max(steps, 1))
                out = torch.zeros((n, 0), dtype=torch.long, device=self.device)
                done = torch.zeros(n, dtype=torch.bool, device=self.device)
                start = 0
                for t in range(max(steps, 0)):
                    logits = model(tokens, kv_cache=cache, start_pos=start, doc_ids=doc, positions=pos)[:, -1]
                    start += tokens.shape[1]
                    nxt = logits.argmax(-1)
                    nxt = torch.where(done, torch.full_like(nxt, int(stop[0])), nxt)
                    out = torch.cat([out, nxt[:, None]], 1)
                    done |= torch.isin(nxt, stop)
                    flag = (~done).any().to(torch.int32).reshape(1)
                    if self.world > 1:  # keep decoding while any rank has an unfinished row
                        dist.all_reduce(flag)
                    if not int(flag) or t == steps - 1:
                        break
                    tokens = nxt[:, None]
                    doc = torch.ones((n, 1), dtype=torch.long, device=self.device)
                    pos = (lens + t)[:, None]
                if chunk is None:
                    continue
                for b, i in enumerate(chunk):
                    seq = out[b].tolist()
                    cut = next((k for k, x in enumerate(seq) if x in self.template.stop_ids), len(seq))
                    results[i] = seq[:cut]
        finally:
            model.train(was_training)
        if self.world > 1:
            gathered: list[dict] = [{} for _ in range(self.world)]
            dist.all_gather_object(gathered, results)
            for part in gathered:
                results.update({int(k): v for k, v in part.items()})
        return [results[i] for i in range(len(prompts))]

    def greedy_answers(self, prompts: list[list[int]], max_new_tokens: int | None = None) -> list[str]:
        """The decoded greedy replies (text up to the first stop id) of every prompt."""
        new = self.greedy_generate(prompts, max_new_tokens or self.cfg.eval.max_new_tokens)
        return [self.template.decode_response(ids) for ids in new]

    def exact_match(self, examples: list | None = None) -> float | None:
        """Accuracy of greedy replies on held-out prompts (PromptExample: their verifier and answer);
        None without ``data.heldout_prompts``."""
        from train.verifiers import verify

        examples = self.heldout_prompts if examples is None else examples
        if not examples:
            return None
        answers = self.greedy_answers([e.prompt_ids for e in examples])
        return sum(verify(e.verifier, a, e.answer) for e, a in zip(examples, answers, strict=True)) / len(examples)

    # -- reports, logging, checkpoints ---------------------------------------------------------------

    def say(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    def add_report(self, what: str, report, required: bool = False) -> None:
        """Print a data file's report once; a required file with no usable row is a one-line UserError."""
        self.say(f"data {what}: {report.summary()}")
        if required and report.used == 0:
            raise UserError(f"{report.path}: no usable row: {report.summary()}")
        self._reports.append((what, report))

    def trainer_state(self) -> dict[str, Any]:
        return {"step": self.step, "scheduler_step": self.step, "tokens": 0, "stage": self.stage,
                "init_from": self.init_path, "tokenizer": self.tokenizer_path, "plan": self.init_state.get("plan"),
                "data": self.data_state(), "world": self.world, "dp": self.dp, "tp": self.tp,
                "model": dataclasses.asdict(self.mcfg), "seq_len": self.max_len,
                "last_metrics": self.last_metrics, "config": self.cfg.to_json()}

    def save(self) -> str:
        path = checkpoint.save(self.cfg.checkpoint.dir, self.step, self.model, self.optimizer,
                               self.trainer_state(), self.cfg.checkpoint.keep_last)
        self.say(f"checkpoint: {path}")
        return path

    def _eval(self) -> dict[str, float]:
        started = time.perf_counter()
        evals = self.evaluate()
        if evals:
            self.log.write({"kind": "eval", "stage": self.stage, "step": self.step, **evals,
                            "eval_s": time.perf_counter() - started})
            self.say(f"eval step {self.step}: " + " | ".join(f"{k} {v:.4f}" for k, v in evals.items()))
        return evals

    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until ``max_steps`` (or step ``stop_at``, with a checkpoint there)."""
        cfg = self.cfg
        end = min(cfg.max_steps, stop_at) if stop_at else cfg.max_steps
        n_params = sum(p.numel() for p in self.model.parameters())
        self.say(f"{self.stage}: {n_params:,} parameters from {self.init_path}, {self.world} processes (dp {self.dp} "
                 f"x tp {self.tp}), {self.device.type}, {cfg.dtype}; steps {self.step} -> {end} of {cfg.max_steps}, "
                 f"{cfg.batch.global_batch_size} per step (accumulation {self.accum})"
                 + (f"; resumed from {self.resumed_from}" if self.resumed_from else ""))
        started = time.perf_counter()
        self.before_training()
        first_eval: dict[str, float] = {}
        if cfg.eval.at_start and self.step == 0:
            first_eval = self._eval()
        evals: dict[str, float] = {}
        while self.step < end:
            lr = lr_at(self.step, cfg.optimizer.lr, cfg.schedule, cfg.max_steps)
            set_lr(self.optimizer, lr)
            metrics = self.train_step()
            self.step += 1
            self.last_metrics = metrics
            if self.step % cfg.log.every == 0 or self.step == end:
                record = {"kind": "train", "stage": self.stage, "step": self.step, **metrics, "lr": lr,
                          "memory_gb": memory_gb(self.device), "elapsed_s": time.perf_counter() - started}
                self.log.write(record)
                self.say(f"step {self.step:>5}/{cfg.max_steps} | " + " | ".join(
                    f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)) + f" | lr {lr:.2e}")
            at_end = self.step == end
            if (cfg.eval.every and self.step % cfg.eval.every == 0) or (at_end and self.step == cfg.max_steps):
                evals = self._eval()
            if (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0) or at_end:
                self.save()
        self.log.close()
        return {"step": self.step, "metrics": self.last_metrics, "eval": evals, "eval_start": first_eval,
                "seconds": time.perf_counter() - started}


def run_stage(trainer_cls, cfg: StageConfig, stop_at: int | None = None) -> dict[str, Any]:
    """Build the stage's trainer and run it; tears the process group down afterwards."""
    try:
        return trainer_cls(cfg).run(stop_at)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def stage_main(trainer_cls, argv: list[str] | None = None) -> int:
    """``python -m train.<stage> --config X.yaml [--set k=v] [--stop-at N]``."""
    import argparse

    from train.pretrain import add_arguments
    from train.stage_config import load

    ap = argparse.ArgumentParser(prog=f"python -m train.{trainer_cls.stage}",
                                 description=f"post-training stage {trainer_cls.stage} (see train/stage.py)")
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        cfg = load(args.config, args.overrides)
        run_stage(trainer_cls, cfg, args.stop_at)
    except UserError as e:
        print(f"smelter train: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0
