"""The post-training stages (train/sft.py, dpo.py, reward.py on train/stage.py) with a tiny model on CPU:
2 data-parallel processes give the losses of 1 process (5 steps of each stage, one torchrun spawn),
the first step's losses match hand computations (SFT: the mean cross-entropy of the assistant tokens of
each conversation computed alone, unpacked; DPO and the reward model: log 2), exact resume, the reward
checkpoint as a scorer, bad rows, config errors and the ``smelter train --stage`` dispatch.

Run as a script, this file is the torchrun worker: ``python tests/train/test_stages.py --worker A.yaml
[B.yaml ...]`` runs each stage config in turn in one process group.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
STEPS = 5
TOL = 1e-5

CONFIG = """\
stage: {stage}
init_from: {base}
data: {{train: {data}/train/{file}, heldout: {data}/heldout/{file}, heldout_prompts: {prompts}}}
max_len: 96
optimizer: {{lr: {lr}, weight_decay: 0.0}}
schedule: {{warmup_steps: 1, kind: constant}}
batch: {{global_batch_size: 4, micro_batch_size: 2}}
max_steps: {steps}
grad_clip: 1.0
checkpoint: {{dir: {out}, every: {every}, keep_last: 2}}
log: {{every: 1, tensorboard: false}}
eval: {{every: 0, max_examples: 6, at_start: {at_start}, max_new_tokens: 4}}
device: cpu
seed: 1
"""

# stage -> (data file, learning rate); the 2-process spawn runs them in this order.
# GRPO joins here: add ("grpo", ("prompts.jsonl", ...)) and its section to the config (lead wires it).
STAGES = {"sft": ("sft.jsonl", 3e-3), "dpo": ("pairs.jsonl", 1e-3), "reward": ("pairs.jsonl", 1e-3)}
#: stage -> extra config sections of the 2-process comparison (the reward model with its per-token head,
#: the example config's; the scalar value head is covered by test_value_head and tests/train/test_grpo.py)
SECTIONS = {"reward": {"reward": {"pool": "token"}}}


def write_config(tmp: Path, base: str, data: Path, stage: str, name: str, steps: int = STEPS, every: int = 0,
                 at_start: bool = False, **extra) -> Path:
    file, lr = STAGES[stage]
    prompts = data / "heldout" / "prompts.jsonl" if stage != "reward" else "null"
    text = CONFIG.format(stage=stage, base=base, data=data, file=file, prompts=prompts, lr=lr, steps=steps,
                         out=tmp / name, every=every, at_start=str(at_start).lower())
    text += "".join(f"{k}: {json.dumps(v)}\n" for k, v in extra.items())
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path


def records(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def trainer_class(stage: str):
    from train.dpo import DPOTrainer
    from train.reward import RewardTrainer
    from train.sft import SFTTrainer

    return {"sft": SFTTrainer, "dpo": DPOTrainer, "reward": RewardTrainer}[stage]


def run_one(path: Path, stop_at: int | None = None) -> dict:
    from train.stage import run_stage
    from train.stage_config import load

    cfg = load(path)
    return run_stage(trainer_class(cfg.stage), cfg, stop_at)


# ---------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def task_data(tmp_path_factory) -> Path:
    from train.tasks import write_task_data

    out = tmp_path_factory.mktemp("task")
    write_task_data(str(out), "reverse_words", 40, 8, seed=0, max_words=4)
    return out


@pytest.fixture(scope="module")
def base_checkpoint(chat_tokenizer, tmp_path_factory) -> str:
    """A random-init tiny model on the test tokenizer's vocabulary, saved with train.checkpoint.save as a
    pretraining run would (the init checkpoint of every stage)."""
    from train import checkpoint
    from train.chat import ChatTemplate
    from train.config import OptimizerConfig
    from train.model import ModelConfig, Transformer
    from train.optim import build_optimizer

    vocab = ChatTemplate.from_tokenizer_file(chat_tokenizer).vocab_size
    cfg = ModelConfig.preset("tiny", vocab_size=vocab, max_seq_len=96)
    model = Transformer(cfg)
    model.init_weights(5)
    root = tmp_path_factory.mktemp("base")
    state = {"step": 0, "model": dataclasses.asdict(cfg), "tokenizer": chat_tokenizer}
    checkpoint.save(str(root), 0, model, build_optimizer(model, OptimizerConfig()), state, keep_last=1)
    return str(root)


@pytest.fixture(scope="module")
def runs(base_checkpoint, task_data, tmp_path_factory) -> Path:
    """One torchrun of 2 gloo processes runs 5 steps of every stage (``<stage>-dp2``) while this process
    runs the same configs alone (``<stage>-dp1``)."""
    tmp = tmp_path_factory.mktemp("stages")
    two = [write_config(tmp, base_checkpoint, task_data, s, f"{s}-dp2", at_start=True, **SECTIONS.get(s, {}))
           for s in STAGES]
    one = [write_config(tmp, base_checkpoint, task_data, s, f"{s}-dp1", at_start=True, **SECTIONS.get(s, {}))
           for s in STAGES]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(Path(__file__).resolve()), "--worker", *map(str, two)],
                            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for path in one:
            run_one(path)
    finally:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out[-2000:], err[-3000:])
    assert out.count("2 processes (dp 2 x tp 1)") == len(STAGES)
    return tmp


# ---------------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("stage", list(STAGES))
def test_two_processes_match_one(runs, stage):
    one, two = records(runs / f"{stage}-dp1"), records(runs / f"{stage}-dp2")
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, STEPS + 1))
    keys = {"sft": ["loss"], "dpo": ["loss", "margin", "chosen_reward", "rejected_reward", "accuracy"],
            "reward": ["loss", "accuracy", "margin"]}[stage]
    for a, b in zip(one, two, strict=True):
        for key in keys:
            assert a[key] == pytest.approx(b[key], abs=TOL), (stage, key, a, b)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4, abs=1e-5)
    ev1, ev2 = records(runs / f"{stage}-dp1", "eval"), records(runs / f"{stage}-dp2", "eval")
    assert [r["step"] for r in ev1] == [r["step"] for r in ev2] == [0, STEPS]
    for a, b in zip(ev1, ev2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=TOL)
        if stage != "reward":  # greedy generation on the sharded model ran in lock step
            assert 0.0 <= a["exact_match"] <= 1.0 and "exact_match" in b
    if stage == "sft":  # it trains: the held-out loss falls
        assert ev1[-1]["loss"] < ev1[0]["loss"]
    else:  # the policy / head moved away from the init: the held-out margin is no longer 0
        assert ev1[0]["margin"] == 0.0 and ev1[-1]["margin"] != 0.0


def test_first_step_losses_are_the_hand_computed_ones(runs, base_checkpoint, task_data):
    """Step 1's loss is computed with the init weights. SFT: the mean cross-entropy over the assistant
    tokens of the first global batch's conversations, each run alone (no packing); DPO: policy =
    reference, so log 2 per pair; the reward model: the new head scores 0, so log 2 too."""
    from train.chat import ChatTemplate
    from train.losses import IGNORE_INDEX
    from train.posttrain_data import load_sft, pack_sft, sft_inputs
    from train.sample import load_model
    from train.stage import EpochOrder

    template = ChatTemplate.from_tokenizer_file(checkpoint_tokenizer(base_checkpoint))
    examples, _ = load_sft(str(task_data / "train" / "sft.jsonl"), template, 96)
    rows = pack_sft(examples, 96, template.pad_id)
    first = EpochOrder(len(rows), 4, seed=1).global_rows(0)
    # which conversations the packed rows of batch 0 hold: match them by their token sequences
    convs = []
    for r in first:
        row = rows[r]
        for d in row.doc_ids.unique().tolist():
            keep = row.doc_ids == d
            if (row.labels[keep] != IGNORE_INDEX).any():
                convs.append(row.tokens[keep].tolist())
    by_input = {tuple(sft_inputs(e)[0]): e for e in examples}
    model, _ = load_model(base_checkpoint)
    total, count = 0.0, 0
    with torch.no_grad():
        for tokens in convs:
            x, y = sft_inputs(by_input[tuple(tokens)])
            logits = model(torch.tensor([x]))[0]
            y = torch.tensor(y)
            keep = y != IGNORE_INDEX
            total += torch.nn.functional.cross_entropy(logits[keep], y[keep], reduction="sum").item()
            count += int(keep.sum())
    assert len(convs) > len(first)  # the rows really are packed
    assert records(runs / "sft-dp1")[0]["loss"] == pytest.approx(total / count, rel=1e-5)
    assert records(runs / "dpo-dp1")[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert records(runs / "dpo-dp1", "eval")[0]["accuracy"] == 0.0  # margin 0 before training
    assert records(runs / "reward-dp1")[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def checkpoint_tokenizer(path: str) -> str:
    from train import checkpoint
    from train.chat import tokenizer_path_of

    return tokenizer_path_of(checkpoint.read_state(checkpoint.resolve(path)))


def test_checkpoints_carry_the_stage_and_the_reward_model_scores(runs, task_data, base_checkpoint):
    from pipelines.errors import UserError
    from train import checkpoint
    from train.posttrain_data import load_pairs
    from train.reward import is_reward_model, load_reward_model, score

    for stage in STAGES:
        state = checkpoint.read_state(checkpoint.resolve(str(runs / f"{stage}-dp2")))
        assert state["stage"] == stage and state["step"] == STEPS and state["world"] == 2
        assert state["init_from"].startswith(base_checkpoint) and state["tokenizer"]
        assert is_reward_model(state) == (stage == "reward") and not state["model"]["value_head"]
        assert state["data"] == {"rows_consumed": 4 * STEPS}
    model, template = load_reward_model(str(runs / "reward-dp2"))
    assert model.reward_pool == "token"
    pairs, _ = load_pairs(str(task_data / "heldout" / "pairs.jsonl"), template, 96)
    pairs = pairs[:6]
    r_c = score(model, template, [p.prompt_ids for p in pairs], [p.chosen_ids for p in pairs], batch_size=4)
    r_r = score(model, template, [p.prompt_ids for p in pairs], [p.rejected_ids for p in pairs], batch_size=4)
    # the trainer's last held-out evaluation, recomputed from the checkpoint in one process
    final = records(runs / "reward-dp2", "eval")[-1]
    assert float(torch.nn.functional.softplus(-(r_c - r_r)).mean()) == pytest.approx(final["loss"], abs=1e-5)
    with pytest.raises(UserError, match="not a reward model"):
        load_reward_model(str(runs / "sft-dp1"))


def test_dpo_resume_is_exact_and_reuses_the_reference(runs, base_checkpoint, task_data, tmp_path):
    """Stop after step 3 with a checkpoint, then a new run resumes: steps 4-5 equal the uninterrupted
    run's, and the reference log-probabilities come from the cache."""
    path = write_config(tmp_path, base_checkpoint, task_data, "dpo", "dpo-split")
    run_one(path, stop_at=3)
    assert (tmp_path / "dpo-split" / "ref_logprobs.pt").is_file()
    out = run_one(path)
    assert out["step"] == STEPS
    full = {r["step"]: r["loss"] for r in records(runs / "dpo-dp1")}
    split = {r["step"]: r["loss"] for r in records(tmp_path / "dpo-split")}
    assert sorted(split) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert split[step] == pytest.approx(full[step], abs=1e-6), step


def test_dpo_sft_weight_adds_the_chosen_replies_nll(base_checkpoint, task_data, tmp_path):
    """dpo.sft_weight 0.5: step 1's loss is log 2 (policy = reference) plus 0.5 x the mean over the first
    batch's pairs of the chosen reply's per-token NLL, computed here with the base model."""
    from train.chat import ChatTemplate
    from train.posttrain_data import load_pairs
    from train.sample import load_model
    from train.stage import EpochOrder

    path = write_config(tmp_path, base_checkpoint, task_data, "dpo", "dpo-rpo", steps=1,
                        dpo={"beta": 0.1, "sft_weight": 0.5})
    run_one(path)
    template = ChatTemplate.from_tokenizer_file(checkpoint_tokenizer(base_checkpoint))
    pairs, _ = load_pairs(str(task_data / "train" / "pairs.jsonl"), template, 96)
    model, _ = load_model(base_checkpoint)
    nll = []
    with torch.no_grad():
        for i in EpochOrder(len(pairs), 4, seed=1).global_rows(0):
            ids = pairs[i].prompt_ids + pairs[i].chosen_ids
            logp = torch.log_softmax(model(torch.tensor([ids]))[0, :-1].float(), -1)
            n = len(pairs[i].chosen_ids)
            nll.append(-float(logp[-n:].gather(-1, torch.tensor(ids[-n:])[:, None]).sum()) / n)
    rec = records(tmp_path / "dpo-rpo")[0]
    assert rec["loss"] == pytest.approx(math.log(2) + 0.5 * sum(nll) / len(nll), rel=1e-5)
    assert rec["chosen_nll"] == pytest.approx(sum(nll) / len(nll), rel=1e-5)


def test_bad_rows_are_reported_and_an_empty_file_is_a_one_line_error(base_checkpoint, task_data, tmp_path):
    from pipelines.errors import UserError

    good = (task_data / "train" / "sft.jsonl").read_text().splitlines()
    data = tmp_path / "data"
    for split in ("train", "heldout"):
        (data / split).mkdir(parents=True)
        (data / split / "prompts.jsonl").write_text((task_data / split / "prompts.jsonl").read_text())
    bad = ['{"messages": [{"role": "user", "content": "hi"}]}', "not json", '{"messages": []}']
    (data / "train" / "sft.jsonl").write_text("\n".join(good[:8] + bad) + "\n")
    (data / "heldout" / "sft.jsonl").write_text("\n".join(good[8:12]) + "\n")
    path = write_config(tmp_path, base_checkpoint, data, "sft", "bad", steps=1, sft={"packing": False})
    run_one(path)  # one conversation per row, padded to the longest of its micro-batch
    report = records(tmp_path / "bad", "data")
    train = next(r for r in report if r["file"] == "train")
    assert train["rows"] == 11 and train["used"] == 8 and sum(train["bad"].values()) == 3
    (data / "train" / "sft.jsonl").write_text("\n".join(bad) + "\n")
    path = write_config(tmp_path, base_checkpoint, data, "sft", "empty", steps=1)
    with pytest.raises(UserError, match="no usable row") as e:
        run_one(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, message", [
    ("dpo: {betta: 0.2}\n", r"dpo.betta: unknown key \(did you mean 'beta'\?\)"),
    ("sft: {packing: maybe}\n", r"sft.packing: Input should be a valid boolean"),
    ("stage: ppo\n", r"stage: Input should be 'sft', 'dpo', 'reward' or 'grpo'"),
    ("max_len: 1\n", r"max_len: Input should be greater than or equal to 2"),
])
def test_config_errors_are_one_line(tmp_path, text, message):
    from pipelines.errors import UserError
    from train.stage_config import load

    base = ("init_from: base\ndata: {train: t.jsonl}\nbatch: {global_batch_size: 2, micro_batch_size: 1}\n"
            "max_steps: 3\ncheckpoint: {dir: c}\n")
    path = tmp_path / "stage.yaml"
    path.write_text(base + text)
    with pytest.raises(UserError, match=message) as e:
        load(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}:6: ")


def test_stage_mismatch_and_cli_dispatch(runs, tmp_path):
    import argparse

    from pipelines.errors import UserError
    from train import cli
    from train.sft import SFTTrainer
    from train.stage_config import load

    cfg = load(runs / "dpo-dp1.yaml")
    with pytest.raises(UserError, match="--stage dpo"):
        SFTTrainer(cfg)
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    assert cli.module_of(p.parse_args(["--config", str(runs / "dpo-dp1.yaml")])) == "train.dpo"
    assert cli.module_of(p.parse_args(["--config", "x.yaml", "--stage", "reward"])) == "train.reward"
    pre = tmp_path / "pre.yaml"
    pre.write_text("plan: p\n")
    args = p.parse_args(["--config", str(pre), "--nproc", "2"])
    assert cli.module_of(args) == "train.pretrain"
    args = p.parse_args(["--config", str(pre), "--stage", "sft", "--nproc", "2"])
    assert cli.torchrun_command(args)[-4:] == ["-m", "train.sft", "--config", str(pre)]


# ---------------------------------------------------------------------------------------------------------
# the torchrun worker


def _worker(paths: list[str]) -> None:
    import torch.distributed as dist

    from train.stage_config import load

    try:
        for path in paths:
            cfg = load(path)
            trainer_class(cfg.stage)(cfg).run()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.path.insert(0, str(ROOT))
        _worker(sys.argv[2:])
