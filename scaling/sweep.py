"""The sweep: a ladder of model sizes and compute budgets, each a real run of the bundled trainer.

::

    name: demo
    plan: ../../out/scaling-plan        # a `smelter mix` plan (relative paths: to this file)
    output: ../../out/scaling-sweep     # runs/<name>/, results.jsonl, results.csv
    models:                             # train.model.ModelConfig shapes (over the `base` preset)
      d32: {dim: 32, n_layers: 1, n_heads: 2, n_kv_heads: 2, ffn_hidden: 96}
      d64: {dim: 64, n_layers: 2, n_heads: 4, n_kv_heads: 4, ffn_hidden: 192}
    budgets:                            # IsoFLOP curves: every listed model at each compute budget
      - {flops: 4e11, models: [d32, d64]}
      - {flops: 1e12, models: [d32, d64]}
    heldout:                            # runs left out of the fit, to check its prediction
      - {model: d64, flops: 3e12}
    train:                              # training-config sections shared by every run (train/config.py)
      optimizer: {lr: 5.0e-3}
      schedule: {kind: cosine, min_lr_ratio: 0.1}
      batch: {global_batch_size: 8, micro_batch_size: 8}
      eval: {batches: 8}
      device: cpu
    lr_reference_dim: 32                # optional: train.optimizer.lr is for models of this width; a
                                        # model of width dim trains at lr * 32 / dim (Adam's 1/width rule)
    warmup_fraction: 0.1                # warmup steps = this share of each run's steps
    checkpoint_every: 100               # steps; a stopped run resumes from its last checkpoint
    keep_checkpoints: false             # delete a run's checkpoints once its result is in
    workers: 1                          # runs at a time (one worker process each; 0: in this process)
    threads: 1                          # torch threads per run (0: torch's default)

Why ``lr_reference_dim``: with Adam, a weight's update size does not shrink with the width that feeds it,
so one learning rate for all widths is too low for the narrowest models or too high for the widest (μP,
Yang et al. 2022, scales the hidden layers' rate by 1/width). On the demo sweep a single 1e-2 left the
width-80 model 0.46 nats worse at 1e12 FLOPs than 3e-3 did, which bends the IsoFLOP curves and the fit.

What a run counts (written into the results):

* N (``params``): the parameters used in matmuls, ``(flops_per_token(seq_len) - 12 n_layers dim seq_len) / 6``
  = the blocks' weight matrices plus the output projection; not the input embedding lookup (a table
  read, no FLOPs) nor the norms. For these small models the vocabulary's tables are most of the
  parameters, so what is counted matters; ``params_total`` is the model's full count.
* D (``tokens``): training tokens, steps x global_batch_size x seq_len; a budget's steps are
  ``round(C / (flops_per_token x batch tokens))``, so a run's actual C is a little off its budget.
* C (``flops``): ``ModelConfig.flops_per_token(seq_len) x D`` = 6 N D + the attention-score FLOPs.
* L (``loss``): the mean over sources of the held-out loss at the last step (``eval_loss_mean`` of
  the final ``kind: eval`` record of the run's metrics.jsonl).

Each run is what ``python -m train.pretrain --config <output>/runs/<name>/train.yaml`` does, trained in
one of ``workers`` worker processes that each import torch once and then train run after run. Runs go in
``<output>/runs/<name>/`` (train.yaml, train.log, metrics.jsonl, checkpoints/). A run whose
result is in ``results.jsonl`` (with the same training config) is not run again; a stopped run resumes
from its last checkpoint (the trainer does that by itself); a run whose config changed starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.errors import UserError
from pipelines.spec import _Ctx, _did_you_mean, _pydantic_message, parse_yaml, read_yaml_file
from scaling.laws import human, parse_flops

RESULTS = "results.jsonl"
RESULTS_CSV = "results.csv"
#: the training-config keys the sweep sets itself for every run
_OWN_KEYS = ("plan", "model", "max_steps", "checkpoint")
CSV_COLUMNS = ["name", "model", "budget", "heldout", "params", "params_total", "tokens", "flops", "steps",
               "loss", "train_loss", "seconds", "dim", "n_layers", "lr"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(_Section):
    flops: float
    models: list[str] = Field(min_length=1)

    @field_validator("flops", mode="before")
    @classmethod
    def _flops(cls, v: Any) -> float:
        return parse_flops(v)


class HeldoutRun(_Section):
    model: str
    flops: float | None = None
    tokens: int | None = Field(None, ge=1)

    @field_validator("flops", mode="before")
    @classmethod
    def _flops(cls, v: Any) -> float | None:
        return None if v is None else parse_flops(v)

    @model_validator(mode="after")
    def _one(self) -> HeldoutRun:
        if (self.flops is None) == (self.tokens is None):
            raise ValueError("give one of flops or tokens")
        return self


class SweepSpec(_Section):
    name: str = Field(min_length=1)
    plan: str
    output: str | None = None
    base: str = "tiny"
    models: dict[str, dict[str, Any]] = Field(min_length=1)
    budgets: list[Budget] = Field(min_length=1)
    heldout: list[HeldoutRun] = Field(default_factory=list)
    train: dict[str, Any] = Field(default_factory=dict)
    lr_reference_dim: int | None = Field(None, ge=1)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    checkpoint_every: int = Field(100, ge=0)
    keep_checkpoints: bool = False
    workers: int = Field(1, ge=0)
    threads: int = Field(1, ge=0)
    origin: str = Field("<string>", exclude=True)


@dataclass
class RunSpec:
    """One run of the ladder, with what it counts (see the module doc)."""

    name: str
    model: str
    overrides: dict[str, Any]
    budget: float | None  # the IsoFLOP budget it belongs to (None: a held-out run given in tokens)
    heldout: bool
    steps: int
    warmup: int
    tokens: int
    flops: float
    params: int
    params_total: int
    flops_per_token: int
    dim: int
    n_layers: int
    lr: float | None = None  # the peak learning rate when it differs from train.optimizer.lr's (by width)


def _budget_name(c: float) -> str:
    return f"{c:.3g}".replace("e+", "e").replace("e0", "e")


def _plan_info(path: str) -> tuple[int, int, int]:
    """(vocab_size, seq_len, samples) of a plan, read from its manifest."""
    from mixtures.reader import TrainingPlan

    plan = TrainingPlan(path)
    return int(plan.manifest["tokenizer"]["vocab_size"]), plan.seq_len, plan.num_samples


class Sweep:
    """A checked sweep YAML: the ladder of runs and where they go."""

    def __init__(self, spec: SweepSpec, ctx: _Ctx, base: Path):
        self.spec, self.ctx = spec, ctx
        self.plan = spec.plan if Path(spec.plan).is_absolute() else str((base / spec.plan).resolve())
        out = spec.output or f"out/scaling-{spec.name}"
        self.output = out if Path(out).is_absolute() else str((base / out).resolve())
        self.vocab, self.seq_len, self.samples = _plan_info(self.plan)
        self.runs = self._ladder()

    # -- checking and laying out the ladder ---------------------------------------------------------

    def _model_config(self, name: str):
        from train.config import TrainConfig

        over = self.spec.models[name]
        cfg = TrainConfig(plan=self.plan, model={"preset": self.spec.base, **over}, batch=self._batch(),
                          max_steps=1, checkpoint={"dir": "."})
        try:
            return cfg.build_model_config(self.vocab, self.seq_len)
        except (KeyError, ValueError, TypeError) as e:
            raise self.ctx.fail(("models", name), str(e).strip("'\"")) from None

    def _batch(self) -> dict[str, Any]:
        return self.spec.train.get("batch", {"global_batch_size": 8, "micro_batch_size": 8})

    def _run(self, model: str, budget: float | None, heldout: bool, flops: float | None, tokens: int | None,
             where: tuple[Any, ...]) -> RunSpec:
        mcfg = self._model_config(model)
        fpt = mcfg.flops_per_token(self.seq_len)
        params = (fpt - 12 * mcfg.n_layers * mcfg.dim * self.seq_len) // 6
        batch_tokens = int(self._batch()["global_batch_size"]) * self.seq_len
        steps = round((flops / fpt if flops is not None else tokens) / batch_tokens)
        if steps < 1:
            raise self.ctx.fail(where, f"{model} at this budget gets no full step of {batch_tokens:,} tokens")
        if steps * int(self._batch()["global_batch_size"]) > self.samples:
            need = steps * batch_tokens
            raise self.ctx.fail(where, f"{model} needs {human(need)} tokens ({steps:,} steps) but the plan "
                                f"{self.plan} holds {human(self.samples * self.seq_len)}: raise budget_tokens "
                                "in its mixture")
        label = _budget_name(budget) if budget is not None else f"{human(tokens)}tok"
        name = f"{model}_{label}" + ("_heldout" if heldout else "")
        return RunSpec(name=name, model=model, overrides=dict(self.spec.models[model]), budget=budget,
                       heldout=heldout, steps=steps, warmup=round(self.spec.warmup_fraction * steps),
                       tokens=steps * batch_tokens, flops=float(fpt * steps * batch_tokens), params=int(params),
                       params_total=mcfg.num_params(), flops_per_token=fpt, dim=mcfg.dim, n_layers=mcfg.n_layers,
                       lr=self._lr(mcfg.dim))

    def _lr(self, dim: int) -> float | None:
        """The peak learning rate of a model of this width under ``lr_reference_dim`` (else None: the
        ``train`` section's as it is)."""
        if self.spec.lr_reference_dim is None:
            return None
        base = (self.spec.train.get("optimizer") or {}).get("lr")
        if base is None:
            from train.config import OptimizerConfig

            base = OptimizerConfig().lr
        return float(base) * self.spec.lr_reference_dim / dim

    def _ladder(self) -> list[RunSpec]:
        spec = self.spec
        known = list(spec.models)
        runs: list[RunSpec] = []
        for name in spec.models:
            if not isinstance(spec.models[name], dict):
                raise self.ctx.fail(("models", name), "a model is a mapping of ModelConfig fields")
            self._model_config(name)
        for i, b in enumerate(spec.budgets):
            for j, m in enumerate(b.models):
                if m not in spec.models:
                    raise self.ctx.fail(("budgets", i, "models", j), f"unknown model {m!r}{_did_you_mean(m, known)}")
                runs.append(self._run(m, b.flops, False, b.flops, None, ("budgets", i, "flops")))
        for i, h in enumerate(spec.heldout):
            if h.model not in spec.models:
                raise self.ctx.fail(("heldout", i, "model"), f"unknown model {h.model!r}{_did_you_mean(h.model, known)}")
            runs.append(self._run(h.model, h.flops, True, h.flops, h.tokens, ("heldout", i)))
        seen: dict[str, int] = {}
        for r in runs:
            if r.name in seen:
                raise self.ctx.fail(("budgets",), f"run {r.name} is listed twice")
            seen[r.name] = 1
        return runs

    # -- one run's training config --------------------------------------------------------------------

    def train_config(self, run: RunSpec) -> dict[str, Any]:
        run_dir = os.path.join(self.output, "runs", run.name)
        cfg = {k: v for k, v in self.spec.train.items()}
        cfg["plan"] = self.plan
        cfg["model"] = {"preset": self.spec.base, **run.overrides}
        cfg["max_steps"] = run.steps
        if run.lr is not None:
            cfg["optimizer"] = {**cfg.get("optimizer", {}), "lr": run.lr}
        sched = dict(cfg.get("schedule", {}))
        sched.setdefault("warmup_steps", run.warmup)
        cfg["schedule"] = sched
        cfg["checkpoint"] = {"dir": os.path.join(run_dir, "checkpoints"), "every": self.spec.checkpoint_every,
                             "keep_last": 1}
        log = dict(cfg.get("log", {}))
        log["dir"] = run_dir
        log.setdefault("every", max(1, run.steps // 20))
        log.setdefault("tensorboard", False)
        cfg["log"] = log
        ev = dict(cfg.get("eval", {}))
        ev["every"] = 0  # only at the end: the final loss is the result
        cfg["eval"] = ev
        cfg.setdefault("batch", self._batch())
        return cfg

    def check_train(self) -> None:
        """The shared ``train`` section must make a valid training config (checked on the first run)."""
        from train.config import TrainConfig

        for key in self.spec.train:
            if key in _OWN_KEYS:
                raise self.ctx.fail(("train", key), "set by the sweep for each run, not here")
        cfg = self.train_config(self.runs[0])
        try:
            TrainConfig(**cfg)
        except ValidationError as e:
            loc, msg = _pydantic_message(e)
            raise self.ctx.fail(("train",) + loc, msg.removeprefix("Value error, ")) from None
        except TypeError as e:
            raise self.ctx.fail(("train",), str(e)) from None


def load_text(text: str, origin: str = "<string>", overrides: list[str] | tuple[str, ...] = (),
              base: Path | None = None) -> Sweep:
    data, ctx = parse_yaml(text, origin, overrides)
    if not isinstance(data, dict):
        raise ctx.fail((), "a sweep is a mapping with name, plan, models, budgets")
    try:
        spec = SweepSpec(**data, origin=origin)
    except ValidationError as e:
        loc, msg = _pydantic_message(e)
        if msg == "unknown key" and len(loc) == 1:
            msg += _did_you_mean(str(loc[0]), [k for k in SweepSpec.model_fields if k != "origin"])
        raise ctx.fail(loc, msg.removeprefix("Value error, ")) from None
    except TypeError as e:
        raise ctx.fail((), str(e)) from None
    sweep = Sweep(spec, ctx, base or Path.cwd())
    sweep.check_train()
    return sweep


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read and check a sweep YAML; relative paths in it resolve against its folder."""
    text = read_yaml_file(path, "sweep config")
    return load_text(text, str(path), overrides, base=Path(path).resolve().parent)


# ---------------------------------------------------------------------------------------------------------
# running


def _config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def read_results(output: str) -> dict[str, dict[str, Any]]:
    """The finished runs in ``<output>/results.jsonl``, by name (the last line of a name wins)."""
    path = os.path.join(output, RESULTS)
    out: dict[str, dict[str, Any]] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    out[row["name"]] = row
    return out


def _final_eval(run_dir: str, steps: int) -> tuple[dict[str, Any] | None, float | None]:
    """(the eval record at ``steps``, the last train loss) from a run's metrics.jsonl."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None, None
    final, train_loss = None, None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("kind") == "eval" and rec.get("step") == steps:
                final = rec
            elif rec.get("kind") == "train":
                train_loss = rec.get("loss")
    return final, train_loss


def _result(run: RunSpec, cfg_hash: str, final: dict[str, Any], train_loss: float | None,
            seconds: float | None) -> dict[str, Any]:
    row = {k: v for k, v in asdict(run).items() if k not in ("overrides", "warmup")}
    row.update({"loss": final["eval_loss_mean"], "eval_loss": final["eval_loss"], "train_loss": train_loss,
                "seconds": seconds, "config_hash": cfg_hash, "model_config": run.overrides})
    return row


def write_csv(output: str, rows: list[dict[str, Any]]) -> str:
    import csv

    path = os.path.join(output, RESULTS_CSV)
    rows = sorted(rows, key=lambda r: (r["heldout"], r["budget"] or math.inf, r["params"]))
    with open(path + ".tmp", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(path + ".tmp", path)
    return path


def _append(output: str, row: dict[str, Any]) -> None:
    with open(os.path.join(output, RESULTS), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def describe(sweep: Sweep) -> str:
    """The ladder as a table: run, N, D, C, steps."""
    lines = [f"sweep {sweep.spec.name}: {len(sweep.runs)} runs on {sweep.plan} (vocab {sweep.vocab:,}, "
             f"seq_len {sweep.seq_len}) -> {sweep.output}",
             f"  {'run':<24} {'N (matmul)':>11} {'N (total)':>10} {'D tokens':>9} {'C FLOPs':>9} {'D/N':>6} "
             f"{'steps':>6}" + ("      lr" if sweep.spec.lr_reference_dim else "")]
    for r in sweep.runs:
        lines.append(f"  {r.name:<24} {human(r.params):>11} {human(r.params_total):>10} {human(r.tokens):>9} "
                     f"{r.flops:>9.3g} {r.tokens / r.params:>6.2f} {r.steps:>6,}"
                     + (f" {r.lr:>8.2e}" if r.lr is not None else ""))
    total = sum(r.flops for r in sweep.runs)
    lines.append(f"  total {total:.3g} FLOPs, {human(sum(r.tokens for r in sweep.runs))} training tokens")
    return "\n".join(lines)


def _worker_init(threads: int) -> None:
    """A sweep worker process: torch's thread count once (the process then trains run after run, so
    torch's import and start-up, ~20 s on a busy machine, is paid once per worker, not per run)."""
    import torch

    if threads:
        torch.set_num_threads(threads)


def _train_one(job: tuple[str, str, str]) -> tuple[str, str | None, float]:
    """Train one run in this worker: ``python -m train.pretrain --config`` without a new interpreter.
    -> (name, error or None, seconds); the trainer's output goes to the run's train.log."""
    import contextlib
    import traceback

    from train.config import load as load_config
    from train.pretrain import train

    name, config, log_path = job
    t0 = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            train(load_config(config))
        except UserError as e:
            print(f"error: {e}")
            return name, str(e), time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - one run's crash must not stop the sweep
            traceback.print_exc()
            return name, f"{type(e).__name__}: {e}", time.perf_counter() - t0
    return name, None, time.perf_counter() - t0


def run_sweep(sweep: Sweep, say=print) -> list[dict[str, Any]]:
    """Run every run of the ladder that has no result yet, ``workers`` at a time; -> all results,
    finished before or now.

    Each worker is a process of its own (``multiprocessing`` spawn) that trains run after run with
    ``train.pretrain.train`` on the run's ``train.yaml``, exactly what ``python -m train.pretrain
    --config`` does; the longest runs go first so that the workers finish together."""
    import multiprocessing

    os.makedirs(sweep.output, exist_ok=True)
    done = read_results(sweep.output)
    todo: list[tuple[RunSpec, str]] = []
    rows: dict[str, dict[str, Any]] = {}
    for run in sweep.runs:
        cfg = sweep.train_config(run)
        h = _config_hash(cfg)
        run_dir = os.path.join(sweep.output, "runs", run.name)
        if run.name in done and done[run.name].get("config_hash") == h:
            rows[run.name] = done[run.name]
            continue
        marker = os.path.join(run_dir, "run.json")
        if os.path.exists(marker):
            with open(marker, encoding="utf-8") as fh:
                old = json.load(fh).get("config_hash")
            if old != h:  # another config: its checkpoints must not be resumed
                shutil.rmtree(run_dir)
        final, train_loss = _final_eval(run_dir, run.steps)
        if final is not None and os.path.exists(marker):  # trained, but the result was never written
            rows[run.name] = _result(run, h, final, train_loss, None)
            _append(sweep.output, rows[run.name])
            continue
        os.makedirs(run_dir, exist_ok=True)
        with open(marker, "w", encoding="utf-8") as fh:
            json.dump({"config_hash": h, "run": asdict(run)}, fh, indent=1)
        with open(os.path.join(run_dir, "train.yaml"), "w", encoding="utf-8") as fh:
            yaml.safe_dump(cfg, fh, sort_keys=False)
        todo.append((run, h))
    if rows:
        say(f"{len(rows)} of {len(sweep.runs)} runs already finished")
    if not todo:
        write_csv(sweep.output, list(rows.values()))
        return [rows[r.name] for r in sweep.runs]
    todo.sort(key=lambda t: -t[0].flops)
    by_name = {run.name: (run, h) for run, h in todo}
    jobs = []
    for run, _ in todo:
        run_dir = os.path.join(sweep.output, "runs", run.name)
        jobs.append((run.name, os.path.join(run_dir, "train.yaml"), os.path.join(run_dir, "train.log")))
        say(f"queued {run.name}: N {human(run.params)}, D {human(run.tokens)}, C {run.flops:.3g}, {run.steps} steps")
    failed: list[str] = []
    threads = sweep.spec.threads
    saved = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if threads:  # the workers read these when they import torch
        os.environ.update({v: str(threads) for v in saved})
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    try:
        with contextlib.ExitStack() as stack:
            if sweep.spec.workers == 0:  # in this process, one run after another (tests, debugging)
                results = map(_train_one, jobs)
            else:
                pool = stack.enter_context(ctx.Pool(min(sweep.spec.workers, len(jobs)), initializer=_worker_init,
                                                    initargs=(threads,)))
                results = pool.imap_unordered(_train_one, jobs)
            for k, (name, error, seconds) in enumerate(results, 1):
                run, h = by_name[name]
                run_dir = os.path.join(sweep.output, "runs", name)
                final, train_loss = _final_eval(run_dir, run.steps)
                if error is not None or final is None:
                    failed.append(f"{name} ({error or 'no final eval in metrics.jsonl'})")
                    say(f"[{k}/{len(jobs)}] {name} FAILED: {error}")
                    continue
                rows[name] = _result(run, h, final, train_loss, round(seconds, 1))
                _append(sweep.output, rows[name])
                write_csv(sweep.output, list(rows.values()))
                if not sweep.spec.keep_checkpoints:
                    shutil.rmtree(os.path.join(run_dir, "checkpoints"), ignore_errors=True)
                say(f"[{k}/{len(jobs)}] {name}: loss {final['eval_loss_mean']:.4f} in {seconds:.0f} s "
                    f"({time.perf_counter() - started:.0f} s so far)")
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    write_csv(sweep.output, list(rows.values()))
    if failed:
        raise UserError(f"{len(failed)} of {len(sweep.runs)} runs failed: " + "; ".join(failed)
                        + f" (logs in {sweep.output}/runs/<name>/train.log)")
    return [rows[r.name] for r in sweep.runs]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table, by budget then model size (held-out runs last)."""
    rows = sorted(rows, key=lambda r: (r["heldout"], r["budget"] or math.inf, r["params"]))
    out = ["| run | budget C | N (matmul) | N (total) | D tokens | D/N | C FLOPs | steps | lr | eval loss | s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        budget = "held out" if r["heldout"] else f"{r['budget']:.3g}"
        secs = f"{r['seconds']:.0f}" if r.get("seconds") is not None else "-"
        lr = f"{r['lr']:.2g}" if r.get("lr") is not None else "-"
        out.append(f"| {r['name']} | {budget} | {human(r['params'])} | {human(r['params_total'])} | "
                   f"{human(r['tokens'])} | {r['tokens'] / r['params']:.2f} | {r['flops']:.3g} | {r['steps']} | "
                   f"{lr} | {r['loss']:.4f} | {secs} |")
    return "\n".join(out)
