"""The training loop on a real plan (`mix_plan`) with the tiny model, on CPU: exact resume, a 2-process
data-parallel checkpoint loading into 1 process, the metrics log, evaluation, config errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.errors import UserError
from train import checkpoint, pretrain
from train.config import load_text

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
plan: {plan}
model: {{preset: tiny}}
optimizer: {{lr: 3.0e-3, weight_decay: 0.1}}
schedule: {{warmup_steps: 3, kind: cosine, min_lr_ratio: 0.1}}
batch: {{global_batch_size: 2, micro_batch_size: 1}}
max_steps: {steps}
grad_clip: 1.0
checkpoint: {{dir: {dir}, every: {every}, keep_last: 2}}
log: {{every: 1}}
eval: {{every: 10, batches: 1}}
device: cpu
seed: 3
"""


def _write(tmp: Path, plan: Path, name: str, steps: int = 20, every: int = 10) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(CONFIG.format(plan=plan, steps=steps, dir=name, every=every))
    return path


def _load(path: Path, overrides=()):
    return load_text(path.read_text(), str(path), overrides, base=path.parent)


def _records(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (run_dir / pretrain.METRICS_FILE).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _records(run_dir)}


@pytest.fixture(scope="module")
def runs(mix_plan, tmp_path_factory) -> Path:
    """`full`: 20 steps in one go (checkpoints at 10 and 20); `split`: a new process that starts from
    `full`'s step-10 checkpoint alone and trains steps 11-20."""
    tmp = tmp_path_factory.mktemp("pretrain")
    pretrain.train(_load(_write(tmp, mix_plan, "full")))
    (tmp / "split").mkdir()
    shutil.copytree(tmp / "full" / "step-00000010", tmp / "split" / "step-00000010")
    shutil.copy(tmp / "full" / pretrain.METRICS_FILE, tmp / "split" / pretrain.METRICS_FILE)
    second = pretrain.train(_load(_write(tmp, mix_plan, "split")))
    assert second["step"] == 20
    return tmp


def test_resume_is_exact(runs):
    full, split = _losses(runs / "full"), _losses(runs / "split")
    assert sorted(full) == sorted(split) == list(range(1, 21))
    # the copied log's steps 11-20 were dropped on resume: the new process wrote them again, once
    assert [r["step"] for r in _records(runs / "split")] == list(range(1, 21))
    for step in range(1, 21):
        assert split[step] == pytest.approx(full[step], abs=1e-6), step
    assert full[20] < full[1] - 0.5  # it learns
    evals = _records(runs / "split", "eval")
    assert [r["step"] for r in evals] == [10, 20]
    assert evals[1]["eval_loss"] == pytest.approx(_records(runs / "full", "eval")[1]["eval_loss"], abs=1e-6)


def test_metrics_log_and_eval(runs, mix_plan):
    from mixtures.reader import TrainingPlan

    rec = _records(runs / "full")
    fields = {"step", "phase", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu", "memory_gb", "elapsed_s"}
    assert all(fields <= set(r) for r in rec)
    plan = TrainingPlan(str(mix_plan))
    assert [r["tokens"] for r in rec[:3]] == [2 * plan.seq_len * k for k in (1, 2, 3)]
    assert {r["phase"] for r in rec} == {"main"}
    assert rec[0]["lr"] == pytest.approx(1e-3) and rec[2]["lr"] == pytest.approx(3e-3)
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["grad_norm"] > 0 and r["memory_gb"] > 0 for r in rec)
    ev = _records(runs / "full", "eval")
    assert [r["step"] for r in ev] == [10, 20]
    sources = [s for s in plan.sources if plan.heldout_samples(s)]
    assert set(ev[-1]["eval_loss"]) == set(sources) and len(sources) >= 2
    assert ev[-1]["eval_loss_mean"] < ev[0]["eval_loss_mean"]
    # checkpoints: keep_last 2, the latest pointer, the trainer state
    root = runs / "full"
    assert [os.path.basename(p) for _, p in checkpoint.step_dirs(str(root))] == ["step-00000010", "step-00000020"]
    assert (root / "latest").read_text().strip() == "step-00000020"
    state = checkpoint.read_state(str(root / "step-00000020"))
    assert state["step"] == state["scheduler_step"] == 20 and state["data"] == {"samples_consumed": 40}
    assert (root / "step-00000020" / "rng-0.pt").is_file() and not list(root.glob("*.tmp"))


def test_stop_at_keeps_the_schedule_and_resumes(mix_plan, tmp_path):
    """--stop-at 2 of 20: a checkpoint at step 2 on the 20-step schedule; the next run resumes at step 3
    and drops any log lines a killed run wrote after the checkpoint."""
    path = _write(tmp_path, mix_plan, "stop", steps=20, every=0)
    out = pretrain.train(_load(path), stop_at=2)
    assert out["step"] == 2 and checkpoint.latest(str(tmp_path / "stop")).endswith("step-00000002")
    rec = _records(tmp_path / "stop")
    assert [r["step"] for r in rec] == [1, 2] and rec[1]["lr"] == pytest.approx(2e-3)
    with open(tmp_path / "stop" / pretrain.METRICS_FILE, "a") as fh:  # a killed run's stray line
        fh.write(json.dumps({"kind": "train", "step": 3, "loss": 0.0}) + "\n")
    trainer = pretrain.Trainer(_load(path))
    try:
        assert trainer.step == 2 and trainer.stream.consumed == 4 and trainer.resumed_from
        assert [r["step"] for r in _records(tmp_path / "stop")] == [1, 2]
    finally:
        pretrain.dist.destroy_process_group()


def test_sample_from_checkpoint(runs):
    from train.sample import sample

    a = sample(str(runs / "full"), "The first", max_new_tokens=8, seed=1)
    assert isinstance(a, str) and a == sample(str(runs / "full"), "The first", max_new_tokens=8, seed=1)


def test_two_dp_ranks_checkpoint_continues_in_one_process(mix_plan, tmp_path):
    """2 gloo processes (FSDP2) train 4 steps with a checkpoint at 2; one process loads that
    checkpoint and trains steps 3-4 with the same losses."""
    cfg = _write(tmp_path, mix_plan, "dp2", steps=4, every=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "train.pretrain", "--config", str(cfg)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (dp 2 x tp 1)" in proc.stdout
    two = _losses(tmp_path / "dp2")
    assert sorted(two) == [1, 2, 3, 4]
    assert checkpoint.read_state(str(tmp_path / "dp2" / "step-00000002"))["world"] == 2

    one_dir = tmp_path / "dp1"
    one_dir.mkdir()
    shutil.copytree(tmp_path / "dp2" / "step-00000002", one_dir / "step-00000002")
    out = pretrain.train(_load(_write(tmp_path, mix_plan, "dp1", steps=4, every=2)))
    assert out["step"] == 4
    one = _losses(one_dir)
    assert sorted(one) == [3, 4]
    for step in (3, 4):
        assert one[step] == pytest.approx(two[step], abs=1e-5), (step, one, two)


@pytest.mark.parametrize("text, message", [
    ("max_stepz: 3\n", r":6: max_stepz: unknown key \(did you mean 'max_steps'\?\)"),
    ("optimizer: {lr: -1}\n", r":6: optimizer.lr: Input should be greater than 0"),
    ("schedule: {kind: linear}\n", r":6: schedule.kind: Input should be 'cosine', 'wsd' or 'constant'"),
    ("model: {preset: huge}\n", r":6: model.preset: unknown model preset 'huge'"),
    ("model: {preset: tiny, n_layer: 3}\n", r":6: model.n_layer: unknown key \(did you mean 'n_layers'\?\)"),
    ("model: {vocab_size: 5}\n", r":6: model.vocab_size: set by the plan's tokenizer"),
    ("parallel: {tp: 2, fsdp: true}\n", r":6: parallel.fsdp: unknown key"),
    ("batch: {global_batch_size: 2}\n", r":6: batch.micro_batch_size: required key is missing"),
    ("schedule: {warmup_steps: 50}\n", r"schedule.warmup_steps 50 exceeds max_steps 10"),
])
def test_config_errors_are_one_line(tmp_path, text, message):
    base = "plan: p\nbatch: {global_batch_size: 2, micro_batch_size: 1}\nmax_steps: 10\ncheckpoint: {dir: c}\n\n"
    path = tmp_path / "train.yaml"
    lines = base.splitlines(keepends=True)
    key = text.split(":")[0]
    lines = [ln for ln in lines if not ln.startswith(key + ":")]
    lines += ["\n"] * (5 - len(lines)) + [text]
    path.write_text("".join(lines))
    with pytest.raises(UserError, match=message) as e:
        _load(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(path))


def test_too_few_samples_and_cli_errors(mix_plan, tmp_path, capsys):
    path = _write(tmp_path, mix_plan, "long", steps=10**6)
    assert pretrain.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the plan has" in err and "lower max_steps to" in err
    assert pretrain.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no such training config" in capsys.readouterr().err
