"""train/parallel.py: 2 data-parallel (FSDP2) and 2 tensor-parallel (DTensor, with and without sequence
parallel) processes on CPU (gloo, fp32) reproduce one process's losses over 5 AdamW steps within 1e-5, and
activation checkpointing does not change them.

One ``torch.multiprocessing.spawn`` of 2 workers runs every distributed configuration in sequence inside a
single process group; the one-process references run in the test process.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

from train.model import ModelConfig, Transformer, generate
from train.parallel import ParallelConfig, build_mesh, clip_grad_norm_, init_distributed, parallelize

STEPS, GLOBAL_BATCH, SEQ = 5, 4, 32
TOL = 1e-5

# name -> (ParallelConfig for 2 processes, model overrides)
CONFIGS = {
    "dp2": (ParallelConfig(dp=2, tp=1), {}),
    "dp2_ac": (ParallelConfig(dp=2, tp=1, activation_checkpointing=True), {}),
    "dp2_tied": (ParallelConfig(dp=2, tp=1), {"tie_embeddings": True}),
    "tp2": (ParallelConfig(dp=1, tp=2), {}),
    "tp2_sp": (ParallelConfig(dp=1, tp=2, sequence_parallel=True), {}),
    "tp2_sp_ac_tied": (ParallelConfig(dp=1, tp=2, sequence_parallel=True, activation_checkpointing=True),
                       {"tie_embeddings": True}),
}


def _batches() -> torch.Tensor:
    """The fixed stream of global batches: [STEPS, GLOBAL_BATCH, SEQ + 1] token ids. Each row follows
    t -> 5t + 3 (mod 256) from a random start, so a model can learn it and the losses fall."""
    starts = torch.randint(0, 256, (STEPS, GLOBAL_BATCH, 1), generator=torch.Generator().manual_seed(7))
    steps = torch.arange(SEQ + 1)
    # closed form of the affine recurrence: x_k = 5^k x_0 + 3 (5^k - 1) / 4  (mod 256)
    pow5 = torch.tensor([pow(5, int(k), 1024) for k in steps])
    return ((pow5 * starts + 3 * (pow5 - 1) // 4) % 256).long()


def _train(model: torch.nn.Module, dp_rank: int = 0, dp_size: int = 1, dp_group=None) -> dict:
    """5 AdamW steps on this rank's share of each global batch; losses averaged over dp like a trainer."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
    losses, norms = [], []
    share = GLOBAL_BATCH // dp_size
    for batch in _batches():
        local = batch[dp_rank * share:(dp_rank + 1) * share]
        logits = model(local[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), local[:, 1:].flatten())
        loss.backward()
        norms.append(clip_grad_norm_(model.parameters(), max_norm=0.5))
        opt.step()
        opt.zero_grad(set_to_none=True)
        reported = loss.detach().clone()
        if dp_size > 1:
            torch.distributed.all_reduce(reported, group=dp_group)
            reported /= dp_size
        losses.append(reported.item())
    return {"loss": losses, "grad_norm": norms}


def _model(**overrides) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", **overrides))
    model.init_weights(seed=1234)
    return model


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    r, w, _ = init_distributed(timeout_s=120)
    assert (r, w) == (rank, world)
    results = {}
    try:
        for name, (pcfg, overrides) in CONFIGS.items():
            mesh = build_mesh(pcfg, world, "cpu")
            model = parallelize(_model(**overrides), mesh, pcfg)
            # every parameter is a DTensor (the optimizers' foreach / fused paths refuse a mix)
            assert all(isinstance(p, DTensor) for p in model.parameters()), name
            if overrides.get("tie_embeddings"):
                assert model.output.weight is model.tok_embeddings.weight
            dp_mesh = mesh["dp"]
            results[name] = _train(model, dp_mesh.get_local_rank(), dp_mesh.size(), dp_mesh.get_group())
            if name in ("dp2", "tp2"):  # KV-cache generation through FSDP / sharded heads = full forward
                results[name]["generate"] = generate(model, [3, 1, 4, 1, 5], 8, temperature=0)
                seq = [3, 1, 4, 1, 5]
                with torch.no_grad():
                    for _ in range(8):
                        seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
                results[name]["greedy"] = seq[5:]
    finally:
        torch.distributed.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(per-rank results of the 2-process configurations, one-process references by tie_embeddings).
    The references are computed here while the workers start up."""
    out = tmp_path_factory.mktemp("parallel")
    ctx = torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=False)
    try:
        torch.use_deterministic_algorithms(True)
        references = {tie: _train(_model(tie_embeddings=tie)) for tie in (False, True)}
    finally:
        while not ctx.join():
            pass
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)], references


@pytest.fixture(scope="module")
def distributed_results(runs):
    return runs[0]


@pytest.fixture(scope="module")
def references(runs):
    return runs[1]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_processes_match_one(name, distributed_results, references):
    ref = references[CONFIGS[name][1].get("tie_embeddings", False)]
    for rank, results in enumerate(distributed_results):
        got = results[name]
        print(name, rank, got["loss"])
        assert max(abs(a - b) for a, b in zip(got["loss"], ref["loss"], strict=True)) < TOL, (got, ref)
        # gradient norms (~1-6) agree to float32 summation-order noise
        torch.testing.assert_close(got["grad_norm"], ref["grad_norm"], rtol=1e-4, atol=1e-5)
    if "generate" in got:
        assert got["generate"] == got["greedy"]
    # the stream really trains (and clipping at 0.5 was active): the comparison is not trivially flat
    assert ref["loss"][-1] < ref["loss"][0] - 0.05
    assert max(ref["grad_norm"]) > 0.5


def test_activation_checkpointing_one_process(references):
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    keys = list(_model().state_dict())
    model = parallelize(_model(), None, ParallelConfig(activation_checkpointing=True))
    assert all(isinstance(block, CheckpointWrapper) for block in model.layers.values())
    assert list(model.state_dict()) == keys  # the wrapper's prefix does not reach state_dict names
    got = _train(model)
    assert max(abs(a - b) for a, b in zip(got["loss"], references[False]["loss"], strict=True)) < TOL


def test_plain_layout_leaves_model_unchanged_and_compile_flag_wires_torch_compile():
    model = _model()
    names = [n for n, _ in model.named_modules()]
    assert parallelize(model, None, ParallelConfig()) is model
    assert [n for n, _ in model.named_modules()] == names
    compiled = parallelize(_model(), None, ParallelConfig(compile=True))
    for block in compiled.layers.values():
        assert isinstance(block, torch._dynamo.eval_frame.OptimizedModule)
    with pytest.raises(ValueError):
        parallelize(_model(), None, ParallelConfig(mixed_precision="bf16"))


def test_parallel_config_resolves_layout():
    assert ParallelConfig(tp=2).resolve(8) == (4, 2)
    assert ParallelConfig(dp=2, tp=2).resolve(4) == (2, 2)
    with pytest.raises(ValueError):
        ParallelConfig(tp=3).resolve(4)
    with pytest.raises(ValueError):
        ParallelConfig(dp=3, tp=1).resolve(2)


def test_clip_grad_norm_plain_tensors():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(4))
    a.grad = torch.tensor([3.0, 0.0, 0.0])
    b.grad = torch.tensor([0.0, 4.0, 0.0, 0.0])
    assert clip_grad_norm_([a, b], max_norm=10.0) == pytest.approx(5.0)
    assert torch.equal(a.grad, torch.tensor([3.0, 0.0, 0.0]))  # under the limit: untouched
    assert clip_grad_norm_([a, b], max_norm=1.0) == pytest.approx(5.0)
    assert torch.linalg.vector_norm(torch.cat([a.grad, b.grad])).item() == pytest.approx(1.0, rel=1e-5)


def test_bf16_mixed_precision_in_a_one_process_group(references):
    """bf16 goes through FSDP2's MixedPrecisionPolicy; init_distributed makes a 1-process group without
    torchrun's environment, so this runs in the test process (gloo; the same path as one GPU)."""
    import torch.distributed as dist

    had_group = dist.is_initialized()
    for var in ("RANK", "WORLD_SIZE"):
        assert var not in os.environ
    try:
        rank, world, local_rank = init_distributed()
        assert (rank, world, local_rank) == (0, 1, 0)
        pcfg = ParallelConfig(mixed_precision="bf16")
        model = parallelize(_model(), build_mesh(pcfg, world, "cpu"), pcfg)
        seen = []
        hook = model.layers["0"].attention.wq.register_forward_hook(
            lambda mod, args, out: seen.append((args[0].dtype, mod.weight.dtype, out.dtype)))
        got = _train(model)
        hook.remove()
        assert seen and all(s == (torch.bfloat16,) * 3 for s in seen)  # compute in bf16
        assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
        # bf16 rounding only: close to the fp32 run, not equal to it
        diffs = [abs(a - b) for a, b in zip(got["loss"], references[False]["loss"], strict=True)]
        assert max(diffs) < 0.05 and max(diffs) > 0
        assert len(generate(model, [1, 2, 3], 5, temperature=0)) == 5  # KV cache takes the bf16 dtype
    finally:
        if not had_group and dist.is_initialized():
            dist.destroy_process_group()
