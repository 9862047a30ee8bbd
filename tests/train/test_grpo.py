"""GRPO (train/grpo.py) and its sampler (train/rollout.py): the advantage, ratio-clipping and k3 KL
formulas on hand-computed cases, the loss' normalisation and gradients, KV-cache group sampling
(reproducible per seed, equal to an uncached reference, cut at stop tokens), and a few trainer steps
on a tiny model with a real chat tokenizer, in one process and in two data-parallel processes."""

from __future__ import annotations

import math

import pytest
import torch

from train.grpo import GRPOSection, clipped_objective, group_advantages, grpo_loss, k3_kl, prompts_per_step
from train.model import ModelConfig, Transformer
from train.rollout import cut_at_stop, generate_group, generate_groups, pick_tokens, sample_seed

# ---------------------------------------------------------------------------------------------------------
# the math on hand-computed cases
# ---------------------------------------------------------------------------------------------------------


def test_group_advantages_hand_computed():
    # group [1, 0, 0, 0]: mean 0.25, std (Bessel) sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    # group [2, 4]: mean 3, std sqrt(2)
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 4.0, 3.0, 3.0]]))
    assert adv[0].tolist() == pytest.approx([0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001])
    std = math.sqrt(2 / 3)  # [2, 4, 3, 3]: deviations -1, 1, 0, 0 -> sum of squares 2, / 3
    assert adv[1].tolist() == pytest.approx([-1 / (std + 1e-4), 1 / (std + 1e-4), 0.0, 0.0])
    # equal rewards: no signal (0 / (0 + eps)), not a division by zero
    assert group_advantages(torch.ones(2, 8)).abs().max() == 0
    with pytest.raises(ValueError):
        group_advantages(torch.ones(3, 1))


def test_k3_kl_hand_computed():
    logp = torch.log(torch.tensor([0.5, 0.25, 0.1]))
    ref = torch.log(torch.tensor([0.25, 0.25, 0.4]))
    # d = ref - logp: log(1/2), 0, log(4) -> exp(d) - d - 1
    expected = [0.5 + math.log(2) - 1, 0.0, 4 - math.log(4) - 1]
    assert k3_kl(logp, ref).tolist() == pytest.approx(expected, abs=1e-6)
    assert (k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()


def test_clipped_objective_hand_computed():
    # ratios 1.5, 0.5, 0.5, 1.5, 1.1 against advantages +1, +1, -1, -1, +2; eps 0.2
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.1]])
    old = torch.zeros(1, 5)
    logp = torch.log(ratio)
    adv = torch.tensor([1.0])
    signs = torch.tensor([[1.0, 1.0, -1.0, -1.0, 2.0]])
    # one sequence per token so each gets its own advantage
    obj, clipped = clipped_objective(logp.T, old.T, signs[0], torch.ones(5, 1, dtype=torch.bool), 0.2)
    assert obj[:, 0].tolist() == pytest.approx([1.2, 0.5, -0.8, -1.5, 2.2])
    assert clipped[:, 0].tolist() == [True, False, True, False, False]
    # the mask zeroes the objective and the clip flags
    obj, clipped = clipped_objective(logp, old, adv, torch.tensor([[True, False, True, True, False]]), 0.2)
    assert obj[0].tolist() == pytest.approx([1.2, 0.0, 0.5, 1.2, 0.0])
    assert clipped[0].tolist() == [True, False, False, True, False]


def test_grpo_loss_normalisation_and_gradient():
    # two sequences of 2 and 1 reply tokens (third position padding); mu = 1: old = logp detached
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.2, 0.7, 0.9]])).requires_grad_()
    ref = torch.log(torch.tensor([[0.25, 0.25, 0.1], [0.4, 0.1, 0.1]]))
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([1.0, -2.0])
    beta = 0.1
    loss, sums = grpo_loss(logp, logp.detach(), ref, adv, mask, 0.2, beta)
    kl = k3_kl(logp.detach(), ref)
    # rho = 1: per-sequence means of (A - beta k3), averaged over the 2 sequences, negated
    seq0 = ((1 - beta * kl[0, 0]) + (1 - beta * kl[0, 1])) / 2
    seq1 = -2 - beta * kl[1, 0]
    assert loss.item() == pytest.approx(-float(seq0 + seq1) / 2, rel=1e-6)
    assert float(sums["kl"]) == pytest.approx(float(kl[0, 0] + kl[0, 1] + kl[1, 0]), rel=1e-6)
    assert (float(sums["tokens"]), float(sums["sequences"]), float(sums["clipped"])) == (3.0, 2.0, 0.0)
    loss.backward()
    # d/dlogp of -(1/N)(1/|o|)(A rho - beta k3) at rho = 1: -(1/N)(1/|o|)(A - beta (1 - exp(ref - logp)))
    d = 1 - torch.exp(ref - logp.detach())
    expected = torch.tensor([[-(1 - beta * d[0, 0]) / 4, -(1 - beta * d[0, 1]) / 4, 0.0],
                             [-(-2 - beta * d[1, 0]) / 2, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, expected)
    # num_sequences sets the denominator (dp ranks x micro-batches); beta 0 drops the KL from the loss
    loss4, _ = grpo_loss(logp, logp.detach(), ref, adv, mask, 0.2, 0.0, num_sequences=4)
    assert loss4.item() == pytest.approx(-(1 + -2) / 4)


def test_grpo_loss_clipped_tokens_get_no_gradient():
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.5, 1.1]])).requires_grad_()  # ratio 1.5 (clipped for A > 0), 1.1
    loss, sums = grpo_loss(logp, old, None, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool), 0.2, 0.0)
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == pytest.approx(-1.1 / 2)
    assert float(sums["clipped"]) == 1.0 and float(sums["kl"]) == 0.0


def test_grpo_section_defaults_and_errors():
    s = GRPOSection()
    assert (s.group_size, s.epsilon, s.kl_beta, s.temperature, s.iterations) == (8, 0.2, 0.04, 1.0, 1)
    assert s.reward.verifier == "auto" and s.reward.reward_model is None
    assert GRPOSection(kl_beta=0, reward={"reward_model": "out/rm"}).reward.verifier is None
    assert prompts_per_step(GRPOSection(group_size=4), 32, 2) == 8
    assert prompts_per_step(GRPOSection(group_size=4, prompts_per_step=8), 32, 1) == 8
    for g, batch, dp in ((GRPOSection(group_size=4), 30, 1), (GRPOSection(group_size=4, prompts_per_step=4), 32, 1),
                         (GRPOSection(group_size=4), 12, 2)):
        with pytest.raises(ValueError):
            prompts_per_step(g, batch, dp)
    for bad in ({"group_size": 1}, {"kl_beta": -1}, {"reward": {"verifier": "fuzzy"}},
                {"reward": {"verifier": "exact", "reward_model": "x"}}, {"groups": 4}):
        with pytest.raises(ValueError):
            GRPOSection(**bad)


# ---------------------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------------------


def _tiny(seed: int = 0) -> Transformer:
    model = Transformer(ModelConfig.preset("tiny", vocab_size=64, max_seq_len=64))
    model.init_weights(seed)
    return model


def _uncached_group(model, prompt, group, steps, temperature, seed):
    """The same sampling without a KV cache: full forward over the whole sequence each step."""
    gen = torch.Generator().manual_seed(seed)
    seqs = torch.tensor([prompt] * group)
    with torch.no_grad():
        for _ in range(steps):
            nxt = pick_tokens(model(seqs)[:, -1], temperature, None, gen)
            seqs = torch.cat([seqs, nxt[:, None]], dim=1)
    return seqs[:, len(prompt):].tolist()


def test_generate_group_matches_uncached_and_is_seeded():
    torch.manual_seed(0)
    model = _tiny()
    prompt = [5, 9, 2, 33]
    got = generate_group(model, prompt, 4, 12, temperature=1.0, seed=11)
    assert got == _uncached_group(model, prompt, 4, 12, 1.0, 11)
    assert len({tuple(r) for r in got}) > 1  # the rows are different samples
    assert generate_group(model, prompt, 4, 12, seed=11) == got
    assert generate_group(model, prompt, 4, 12, seed=12) != got
    # a stop token cuts each row after its first occurrence; the prefix is unchanged
    stop = got[0][3]
    cut = generate_group(model, prompt, 4, 12, stop_ids=[stop], seed=11)
    assert cut == [cut_at_stop(r, [stop]) for r in got]
    assert cut[0][-1] == stop and len(cut[0]) <= 4
    # greedy = argmax of an uncached forward
    assert generate_group(model, prompt, 1, 6, temperature=0) == _uncached_group(model, prompt, 1, 6, 0, 0)
    with pytest.raises(ValueError):
        generate_group(model, [1] * 60, 2, 8)  # 68 > max_seq_len 64


def test_generate_groups_batches_prompts_of_any_length_like_one_at_a_time():
    """Left-padded prompts of different lengths sampled in one batch draw exactly the replies each
    prompt draws alone with its seed (temperature 1 and greedy)."""
    torch.manual_seed(0)
    model = _tiny()
    prompts = [[5, 9, 2, 33], [7], [40, 41, 42, 43, 44, 45, 46], [3, 3]]
    seeds = [11, 12, 13, 14]
    for temperature in (1.0, 0.0):
        together = generate_groups(model, prompts, 3, 10, temperature, stop_ids=[9], seeds=seeds, pad_id=1)
        alone = [generate_group(model, p, 3, 10, temperature, stop_ids=[9], seed=s)
                 for p, s in zip(prompts, seeds, strict=True)]
        assert together == alone
    with pytest.raises(ValueError, match="seeds"):
        generate_groups(model, prompts, 2, 4, seeds=[1])


def test_pick_tokens_samples_the_softmax_and_respects_top_k():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(40000, 4)
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(pick_tokens(logits, 1.0, None, gen), minlength=4).float() / 40000
    torch.testing.assert_close(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.01, rtol=0)
    top2 = torch.bincount(pick_tokens(logits, 1.0, 2, gen), minlength=4).float() / 40000
    assert top2[2:].sum() == 0 and abs(float(top2[0]) - 0.625) < 0.01
    # temperature 0.5 squares the probabilities (renormalised)
    sharp = torch.bincount(pick_tokens(logits, 0.5, None, gen), minlength=4).float() / 40000
    p2 = torch.tensor([0.25, 0.09, 0.0225, 0.0025])
    torch.testing.assert_close(sharp, p2 / p2.sum(), atol=0.01, rtol=0)


def test_sample_seeds():
    assert sample_seed(0, 3, 5) == sample_seed(0, 3, 5)
    assert len({sample_seed(0, s, i) for s in range(10) for i in range(10)}) == 100


# ---------------------------------------------------------------------------------------------------------
# the trainer: a tiny model, the chat tokenizer, real task prompts; one process and two
# ---------------------------------------------------------------------------------------------------------

CONFIG = """\
stage: grpo
init_from: {root}/init
data: {{train: {root}/data/train/prompts.jsonl, heldout_prompts: {root}/data/heldout/prompts.jsonl}}
max_len: 96
optimizer: {{lr: {lr}, weight_decay: 0.0}}
schedule: {{warmup_steps: 0, kind: constant}}
batch: {{global_batch_size: 16, micro_batch_size: 8}}
max_steps: {steps}
grad_clip: 1.0
checkpoint: {{dir: {run}, every: 0, keep_last: 1}}
log: {{every: 1, tensorboard: false}}
eval: {{every: 0, max_examples: 4, max_new_tokens: 6}}
device: cpu
seed: 1
grpo: {{group_size: 4, prompts_per_step: 4, max_new_tokens: 8, kl_beta: 0.1, iterations: {mu},
        reward: {reward}}}
"""
STEPS = 5  # the 2-process check: 5 steps


def _save(root, name: str, model: Transformer, tokenizer: str) -> None:
    import dataclasses

    from train import checkpoint

    opt = torch.optim.AdamW(model.parameters())
    state = {"step": 0, "model": dataclasses.asdict(model.cfg), "tokenizer": tokenizer}
    checkpoint.save(str(root / name), 0, model, opt, state, keep_last=1)


@pytest.fixture(scope="module")
def grpo_root(tmp_path_factory, chat_tokenizer):
    """init/ (a tiny random policy on the chat tokenizer), rm/ (a tiny random reward model: scores that
    differ between replies, so the advantages are not all zero), data/ (reverse_words prompts)."""
    import warnings

    from train.chat import ChatTemplate
    from train.tasks import write_task_data

    root = tmp_path_factory.mktemp("grpo")
    vocab = ChatTemplate.from_tokenizer_file(chat_tokenizer).vocab_size
    cfg = ModelConfig.preset("tiny", vocab_size=vocab, max_seq_len=96)
    policy = Transformer(cfg)
    policy.init_weights(3)
    rm = Transformer(cfg.with_(value_head=True, tie_embeddings=False))
    rm.init_weights(4)
    with torch.no_grad():  # a new value head starts at 0 (every score equal): give it random weights
        rm.output.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _save(root, "init", policy, chat_tokenizer)
        _save(root, "rm", rm, chat_tokenizer)
    write_task_data(str(root / "data"), "reverse_words", 24, 6, seed=0, words="common", max_words=4)
    return root


def _config(root, run: str, steps: int = STEPS, mu: int = 1, reward: str | None = None, lr: float = 3e-3) -> str:
    reward = reward or f"{{reward_model: {root}/rm}}"
    path = root / f"{run}.yaml"
    path.write_text(CONFIG.format(root=root, run=root / run, steps=steps, mu=mu, reward=reward, lr=lr))
    return str(path)


def run_grpo(config_path: str) -> dict:
    """One GRPO run of ``config_path`` in this process (a 1-process group, or the torchrun / spawn
    group its environment names): the function a 2-process spawn calls on every rank."""
    from train.grpo import GRPOTrainer
    from train.stage import run_stage
    from train.stage_config import load

    return run_stage(GRPOTrainer, load(config_path))


def _grpo_worker(rank: int, world: int, port: int, config_path: str) -> None:
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    run_grpo(config_path)


def _records(run_dir, kind: str = "train") -> list[dict]:
    import json

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(scope="module")
def runs(grpo_root):
    """The same 5-step reward-model GRPO run in 2 data-parallel processes (spawned) and in 1 (here,
    while the workers start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = _config(grpo_root, "two")
    ctx = torch.multiprocessing.spawn(_grpo_worker, args=(2, port, two), nprocs=2, join=False)
    try:
        one = run_grpo(_config(grpo_root, "one"))
    finally:
        while not ctx.join():
            pass
    return one, _records(grpo_root / "one"), _records(grpo_root / "two")


def test_grpo_trainer_logs_and_learns_from_rewards(runs, grpo_root):
    from train import checkpoint

    result, one, _ = runs
    assert [r["step"] for r in one] == list(range(1, STEPS + 1))
    for r in one:
        for key in ("loss", "reward", "accuracy", "kl", "clip_frac", "reply_len", "grad_norm", "flat_groups"):
            assert math.isfinite(r[key]), (key, r)
        assert 1 <= r["reply_len"] <= 8 and r["clip_frac"] == 0.0  # mu = 1: rho = 1, nothing is clipped
    # step 1 samples from the reference itself: k3 is exactly 0; the updates then move the policy away
    assert one[0]["kl"] == 0.0 and one[-1]["kl"] > 0
    assert one[0]["grad_norm"] > 0  # the random reward model's scores give non-zero advantages
    state = checkpoint.read_state(checkpoint.resolve(str(grpo_root / "one")))
    assert state["stage"] == "grpo" and state["step"] == STEPS and state["data"]["rows_consumed"] == 4 * STEPS
    assert "exact_match" in result["eval"]  # greedy held-out accuracy at the end


def test_two_processes_match_one(runs):
    _, one, two = runs
    assert len(one) == len(two) == STEPS
    for a, b in zip(one, two, strict=True):
        for key in ("accuracy", "reply_len", "flat_groups"):  # the same samples were drawn
            assert a[key] == b[key], (key, a, b)
        for key in ("reward", "loss", "kl", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a, b)


def test_several_updates_per_batch_clip_the_ratio_and_verifier_rewards(grpo_root):
    """mu = 2 with a large learning rate: the second update sees ratios far from 1 against the sampling
    policy's log-probs, and the clipped tokens are counted; verifier rewards equal the accuracy."""
    run_grpo(_config(grpo_root, "mu2", steps=1, mu=2, lr=0.05))
    rec = _records(grpo_root / "mu2")[0]
    assert 0 < rec["clip_frac"] < 1 and rec["kl"] > 0
    run_grpo(_config(grpo_root, "exact", steps=1, reward="{verifier: exact}"))
    rec = _records(grpo_root / "exact")[0]
    assert rec["reward"] == rec["accuracy"]
