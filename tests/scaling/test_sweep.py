"""The sweep on a real plan (`mix_plan`: the corpus, seq_len 128, GPT-2's 50,257 tokens): what the ladder
counts, two real runs of the trainer (two at a time) collected in results.jsonl / results.csv, a second
call that runs nothing, and one-line errors that name the sweep file's line."""

from __future__ import annotations

import csv
import json
import os

import pytest

from pipelines.errors import UserError
from scaling import sweep as sw
from train.model import ModelConfig

SWEEP = """\
name: t
plan: {plan}
output: {out}
models:
  a: {{dim: 16, n_layers: 1, n_heads: 2, n_kv_heads: 2, ffn_hidden: 32}}
  b: {{dim: 32, n_layers: 1, n_heads: 2, n_kv_heads: 2, ffn_hidden: 64}}
budgets:
  - {{flops: {flops}, models: [a, b]}}
train:
  optimizer: {{lr: 1.0e-2}}
  batch: {{global_batch_size: 2, micro_batch_size: 2}}
  eval: {{batches: 1}}
checkpoint_every: 3
workers: 0
"""


def _write(tmp_path, mix_plan, flops="8e9", extra: str = "") -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(plan=mix_plan, out=tmp_path / "out", flops=flops) + extra)
    return str(path)


def test_ladder_counts(mix_plan, tmp_path):
    s = sw.load(_write(tmp_path, mix_plan))
    assert s.seq_len == 128 and s.vocab >= 50257  # GPT-2's BPE and smelter's special tokens
    for run in s.runs:
        cfg = ModelConfig(vocab_size=s.vocab, dim=run.dim, n_layers=run.n_layers, n_heads=2, n_kv_heads=2,
                          ffn_hidden=2 * run.dim, max_seq_len=128)
        # N: the block matrices (q, k, v, o and the three SwiGLU ones) and the output projection
        d = run.dim
        assert run.params == run.n_layers * (4 * d * d + 3 * d * 2 * d) + s.vocab * d
        assert run.params_total == cfg.num_params() and run.params_total > run.params
        assert run.tokens == run.steps * 2 * 128
        assert run.flops == cfg.flops_per_token(128) * run.tokens
        assert abs(run.flops / 8e9 - 1) < 0.5 / run.steps + 1e-9  # the nearest whole step
    assert [r.name for r in s.runs] == ["a_8e9", "b_8e9"]
    assert "a_8e9" in sw.describe(s)


def test_learning_rate_scales_with_width(mix_plan, tmp_path):
    """lr_reference_dim: width 16 trains at 1e-2 * 32 / 16, width 32 at 1e-2; each run's train.yaml
    carries it, the other optimizer keys stay; without the key every run has the train section's."""
    s = sw.load(_write(tmp_path, mix_plan, extra="lr_reference_dim: 32\n"))
    assert [r.lr for r in s.runs] == [pytest.approx(2e-2), pytest.approx(1e-2)]
    assert s.train_config(s.runs[0])["optimizer"] == {"lr": pytest.approx(2e-2)}
    assert "2.00e-02" in sw.describe(s)
    plain = sw.load(_write(tmp_path, mix_plan))
    assert [r.lr for r in plain.runs] == [None, None]
    assert plain.train_config(plain.runs[0])["optimizer"] == {"lr": 1e-2}


def test_sweep_runs_and_resumes(mix_plan, tmp_path):
    s = sw.load(_write(tmp_path, mix_plan))
    said: list[str] = []
    rows = sw.run_sweep(s, say=said.append)
    assert [r["name"] for r in rows] == ["a_8e9", "b_8e9"]
    for row, run in zip(rows, s.runs, strict=True):
        run_dir = os.path.join(s.output, "runs", run.name)
        evals = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))
                 if '"eval"' in line]
        assert evals[-1]["step"] == run.steps and row["loss"] == evals[-1]["eval_loss_mean"]
        assert 5 < row["loss"] < 12 and row["params"] == run.params and row["tokens"] == run.tokens
        assert not os.path.exists(os.path.join(run_dir, "checkpoints"))  # removed once the result is in
    with open(os.path.join(s.output, sw.RESULTS_CSV)) as fh:
        table = list(csv.DictReader(fh))
    assert [r["name"] for r in table] == ["a_8e9", "b_8e9"]
    assert float(table[0]["loss"]) == pytest.approx(rows[0]["loss"])
    # the same sweep again: nothing runs
    mtime = os.path.getmtime(os.path.join(s.output, "runs", "a_8e9", "train.log"))
    said.clear()
    again = sw.run_sweep(sw.load(_write(tmp_path, mix_plan)), say=said.append)
    assert said == ["2 of 2 runs already finished"] and again == rows
    assert os.path.getmtime(os.path.join(s.output, "runs", "a_8e9", "train.log")) == mtime
    assert "| a_8e9 |" in sw.markdown_table(again)


@pytest.mark.parametrize("flops, extra, message", [
    ("8e9", "bogus: 1\n", r"sweep.yaml:\d+: bogus: unknown key"),
    ("lots", "", r"sweep.yaml:8: budgets\[0\].flops: cannot read 'lots' as FLOPs"),
    ("8e9", "heldout:\n  - {model: c, flops: 1e11}\n", r"sweep.yaml:16: heldout\[0\].model: unknown model 'c' \(known: a, b\)"),
    ("8e9", "heldout:\n  - {model: a}\n", r"sweep.yaml:16: heldout\[0\]: give one of flops or tokens"),
    ("1e15", "", r"sweep.yaml:8: budgets\[0\].flops: a needs 2\d\dM tokens .* but the plan .* holds 1.5M: raise budget_tokens"),
    ("1e6", "", r"sweep.yaml:8: budgets\[0\].flops: a at this budget gets no full step of 256 tokens"),
])
def test_sweep_errors(mix_plan, tmp_path, flops, extra, message):
    with pytest.raises(UserError, match=message):
        sw.load(_write(tmp_path, mix_plan, flops, extra))


def test_sweep_errors_in_sections(mix_plan, tmp_path):
    text = SWEEP.format(plan=mix_plan, out=tmp_path / "out", flops="8e9")
    path = tmp_path / "sweep.yaml"
    path.write_text(text.replace("models: [a, b]", "models: [a, bb]"))
    with pytest.raises(UserError, match=r"sweep.yaml:8: budgets\[0\].models\[1\]: unknown model 'bb' \(did you mean 'b'"):
        sw.load(str(path))
    path.write_text(text.replace("  eval: {batches: 1}", "  eval: {batches: 1}\n  max_steps: 5"))
    with pytest.raises(UserError, match=r"sweep.yaml:13: train.max_steps: set by the sweep"):
        sw.load(str(path))
    path.write_text(text.replace("lr: 1.0e-2", "lr: -1"))
    with pytest.raises(UserError, match=r"sweep.yaml:\d+: train.optimizer.lr: Input should be greater than 0"):
        sw.load(str(path))
    path.write_text(text.replace("n_heads: 2, n_kv_heads: 2, ffn_hidden: 32", "n_heads: 3, n_kv_heads: 3"))
    with pytest.raises(UserError, match=r"sweep.yaml:5: models.a: dim 16 is not a multiple of n_heads 3"):
        sw.load(str(path))
