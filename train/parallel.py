"""Parallelism for the trainer's Transformer, applied from outside the model (as torchtitan does).

Order of application in ``parallelize`` (each optional):

1. Tensor parallel (Megatron's split) with DTensor's ``parallelize_module`` on the "tp" mesh dimension:
   attention q/k/v and the SwiGLU w1/w3 are column-parallel (each rank owns a slice of the heads / hidden
   units), attention wo and SwiGLU w2 are row-parallel (partial sums all-reduced), the embedding is sharded
   over the vocabulary and the output projection over its output features, gathered back to full logits.
   With ``sequence_parallel`` the norms and residual stream are sharded over the sequence between blocks
   (all-gather before attention / MLP, reduce-scatter after), which cuts activation memory by tp.
2. Activation checkpointing of each block (recompute its forward during backward).
3. ``torch.compile`` of each block.
4. FSDP2 ``fully_shard`` of each block and of the root over the "dp" mesh dimension, with bf16 parameters
   and fp32 gradient reduction when ``mixed_precision == "bf16"``.

Wrapping adds name prefixes to parameters: the checkpoint wrapper's ``_checkpoint_wrapped_module.`` is
hidden from ``state_dict()`` by the wrapper itself, but compile's ``_orig_mod.`` is not (it shows in
``named_parameters()`` too). Save and load with ``torch.distributed.checkpoint.state_dict``'s
``get_model_state_dict`` / ``get_optimizer_state_dict`` (and the ``set_`` pair), which strip both, so a
checkpoint does not depend on the layout.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard

from train.model import Transformer


@dataclass
class ParallelConfig:
    """Layout of the processes: ``dp`` x ``tp`` = world size (``dp=-1``: world // tp)."""

    dp: int = -1
    tp: int = 1
    sequence_parallel: bool = False
    activation_checkpointing: bool = False
    compile: bool = False
    mixed_precision: Literal["fp32", "bf16"] = "fp32"

    def resolve(self, world: int) -> tuple[int, int]:
        """(dp, tp) for this world size; raises when they do not multiply to it."""
        if self.tp < 1 or world % self.tp:
            raise ValueError(f"tp={self.tp} does not divide the world size {world}")
        dp = world // self.tp if self.dp == -1 else self.dp
        if dp * self.tp != world:
            raise ValueError(f"dp={dp} x tp={self.tp} != world size {world}")
        if self.mixed_precision not in ("fp32", "bf16"):
            raise ValueError(f"mixed_precision must be 'fp32' or 'bf16', not {self.mixed_precision!r}")
        return dp, self.tp


def init_distributed(timeout_s: float = 600.0, device_type: str | None = None) -> tuple[int, int, int]:
    """Join the process group and return (rank, world_size, local_rank).

    Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR in the environment) this joins the job's
    group: NCCL on CUDA (and selects the local GPU), gloo on CPU. Without that environment it makes a
    one-process group from an in-memory store, so meshes, FSDP2 (bf16 mixed precision on one GPU) and
    DCP checkpoints work the same way in a plain ``python`` run. Calling it again is harmless.
    ``device_type`` ("cpu" / "cuda") overrides the choice, e.g. a CPU run on a machine with GPUs.
    """
    cuda = torch.cuda.is_available() if device_type is None else device_type == "cuda"
    backend = "nccl" if cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            kwargs = {"device_id": torch.device("cuda", local_rank)} if cuda else {}
            dist.init_process_group(backend, timeout=timeout, **kwargs)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), local_rank


def build_mesh(pcfg: ParallelConfig, world: int, device_type: str) -> DeviceMesh:
    """A 2-D device mesh with dimensions ("dp", "tp"); ranks along "tp" are contiguous (same node first)."""
    dp, tp = pcfg.resolve(world)
    return init_device_mesh(device_type, (dp, tp), mesh_dim_names=("dp", "tp"))


# ---------------------------------------------------------------------------------------------------------


def _replicated_style():
    """A ParallelStyle that keeps a module whole on every TP rank but makes its parameters Replicate
    DTensors (plain tensors in, plain tensors out). Used for the norms when sequence parallel is off, so that
    every parameter of a TP model is a DTensor: the optimizers' foreach / fused paths (the defaults on GPU)
    refuse a list that mixes plain tensors and DTensors. The gradient reaching the norm's output is already
    all-reduced (by the column-parallel layer after it), so the weight gradient is the same on every rank."""
    from torch.distributed.tensor import distribute_module, distribute_tensor
    from torch.distributed.tensor.parallel import ParallelStyle

    class _Replicated(ParallelStyle):
        def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
            def partition(_name, mod, mesh):
                for pname, p in list(mod.named_parameters(recurse=False)):
                    mod.register_parameter(pname, nn.Parameter(distribute_tensor(p, mesh, [Replicate()])))

            def inputs(_mod, args, mesh):
                return tuple(DTensor.from_local(a, mesh, [Replicate()], run_check=False)
                             if isinstance(a, torch.Tensor) and not isinstance(a, DTensor) else a for a in args)

            def outputs(_mod, out, _mesh):
                return out.to_local() if isinstance(out, DTensor) else out

            return distribute_module(module, device_mesh, partition, inputs, outputs)

    return _Replicated()


def _apply_tp(model: Transformer, tp_mesh: DeviceMesh, sequence_parallel: bool) -> None:
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    norm_style = SequenceParallel if sequence_parallel else _replicated_style

    cfg = model.cfg
    tp = tp_mesh.size()
    for what, n in (("n_heads", cfg.n_heads), ("n_kv_heads", cfg.n_kv_heads), ("ffn_hidden", cfg.ffn_hidden)):
        if n % tp:
            raise ValueError(f"tensor parallel {tp} does not divide {what}={n}")

    # between blocks the residual stream is replicated (plain TP) or sharded over the sequence (SP)
    stream = Shard(1) if sequence_parallel else Replicate()
    top_plan = {
        "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=stream),
        "output": ColwiseParallel(input_layouts=stream, output_layouts=Replicate(), use_local_output=True),
    }
    if cfg.value_head:
        # a reward model's head has one output feature, nothing to shard: keep it whole on every TP rank
        # (gathering the sequence first under sequence parallel)
        if sequence_parallel:
            parallelize_module(model, tp_mesh, {"output": PrepareModuleInput(
                input_layouts=(stream,), desired_input_layouts=(Replicate(),), use_local_output=True)})
        top_plan["output"] = _replicated_style()
    top_plan["norm"] = norm_style()
    parallelize_module(model, tp_mesh, top_plan)

    for block in model.layers.values():
        plan = {
            "attention_norm": norm_style(),
            "ffn_norm": norm_style(),
            # inputs (x, cos, sin): x is gathered to the full sequence, the rotary tables stay local
            "attention": PrepareModuleInput(input_layouts=(stream, None, None),
                                            desired_input_layouts=(Replicate(), None, None)),
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=stream),
            "feed_forward": PrepareModuleInput(input_layouts=(stream,), desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w3": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=stream),
        }
        parallelize_module(block, tp_mesh, plan)

    if cfg.tie_embeddings:
        # both sides were distributed separately (each Shard(0) over the vocabulary): share one tensor again
        model.output.weight = model.tok_embeddings.weight


def parallelize(model: Transformer, mesh: DeviceMesh | None, pcfg: ParallelConfig) -> nn.Module:
    """Apply tensor parallel, activation checkpointing, compile and FSDP2 (in that order) per ``pcfg``.

    Call after ``model.init_weights`` with the model on its device. ``mesh`` comes from ``build_mesh``; it
    may be None only for a one-process layout (then no TP / FSDP is possible). Returns the same module,
    modified in place. With dp == tp == 1, fp32, no checkpointing and no compile the model is unchanged.

    Under TP the model still returns full logits, identical on every TP rank, so the loss is the ordinary
    mean cross-entropy; under FSDP each dp rank computes the mean loss over its own tokens and FSDP averages
    gradients over dp (equal token counts per rank make that the global mean). Sequence parallel needs the
    sequence length to be a multiple of tp.
    """
    if mesh is None:
        dp, tp = 1, 1
    else:
        dp, tp = mesh["dp"].size(), mesh["tp"].size()
    if mesh is None and pcfg.mixed_precision == "bf16":
        raise ValueError("bf16 mixed precision goes through FSDP2: pass a mesh (init_distributed + build_mesh)")

    if tp > 1:
        _apply_tp(model, mesh["tp"], pcfg.sequence_parallel)

    if pcfg.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for name, block in list(model.layers.named_children()):
            model.layers.register_module(name, checkpoint_wrapper(block, preserve_rng_state=False))

    if pcfg.compile:
        # the blocks share one code object: let dynamo keep a compiled entry per block if it specializes
        dyn = torch._dynamo.config
        limit = "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit"
        setattr(dyn, limit, max(getattr(dyn, limit), len(model.layers) + 8))
        for name, block in list(model.layers.named_children()):
            model.layers.register_module(name, torch.compile(block, fullgraph=True))

    if dp > 1 or pcfg.mixed_precision == "bf16":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy()
        if pcfg.mixed_precision == "bf16":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        dp_mesh = mesh["dp"]
        blocks = list(model.layers.values())
        for i, block in enumerate(blocks):
            # free gathered parameters after each block's forward (re-gathered for backward), except the
            # last block's, which backward needs at once; on one dp rank there is nothing to free
            reshard = dp > 1 and i < len(blocks) - 1
            fully_shard(block, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard)
        fully_shard(model, mesh=dp_mesh, mp_policy=mp)
    return model


# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def clip_grad_norm_(params: Iterable[torch.Tensor], max_norm: float, norm_type: float = 2.0) -> float:
    """Scale gradients so their global norm is at most ``max_norm``; returns the norm before clipping.

    Works with any mix of plain tensors and DTensors on different meshes (FSDP shards on "dp", TP shards
    on "tp", both): gradients are grouped by (mesh, placements), each group's norm is reduced over its
    mesh by DTensor (sharded dims summed, replicated dims counted once), and the groups are combined here.
    Every rank gets the same result.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    groups: dict[object, list[torch.Tensor]] = {}
    for g in grads:
        key = (g.device_mesh, g.placements) if isinstance(g, DTensor) else ("local", g.device)
        groups.setdefault(key, []).append(g)

    parts = []
    for group in groups.values():
        norm = torch.nn.utils.get_total_norm(group, norm_type=norm_type, foreach=None)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        parts.append(norm.float().reshape(()))
    device = grads[0].to_local().device if isinstance(grads[0], DTensor) else grads[0].device
    parts = [p.to(device) for p in parts]
    if math.isinf(norm_type):
        total = torch.stack(parts).max()
    else:
        total = torch.stack(parts).pow(norm_type).sum().pow(1.0 / norm_type)
    total_f = float(total)
    coef = max_norm / (total_f + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return total_f
