"""Checkpoints with torch.distributed.checkpoint (DCP), loadable into another parallel layout.

A checkpoint folder ``<dir>/step-00000100/`` holds:

- the DCP files of ``{"model": ..., "optim": ...}`` as ``get_state_dict`` gives them: keyed by the
  parameters' fully qualified names, DTensors saved as their global tensors' shards, so a run with
  2 data-parallel ranks (FSDP2) loads into 1 process, or the reverse, and DCP reshards on load;
- ``trainer_state.json``: step, samples consumed, scheduler step, tokens, the model config, the layout;
- ``rng-<rank>.pt``: each rank's torch / CUDA / numpy / python RNG states (a rank without its own file,
  after a change of layout, takes rank 0's).

Saving is atomic: every rank writes into ``step-N.tmp``, then rank 0 renames it and rewrites the
``latest`` pointer (itself replaced atomically), and removes all but the ``keep_last`` newest folders.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from pipelines.errors import UserError

LATEST = "latest"
STATE_FILE = "trainer_state.json"
_STEP_RE = re.compile(r"^step-(\d+)$")


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def step_dirs(root: str) -> list[tuple[int, str]]:
    """(step, path) of the finished checkpoints under ``root``, oldest first."""
    if not os.path.isdir(root):
        return []
    out = [(int(m.group(1)), os.path.join(root, name)) for name in os.listdir(root)
           if (m := _STEP_RE.match(name)) and os.path.isfile(os.path.join(root, name, STATE_FILE))]
    return sorted(out)


def latest(root: str) -> str | None:
    """The checkpoint the ``latest`` pointer names, else the newest finished one, else None."""
    pointer = os.path.join(root, LATEST)
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as fh:
            path = os.path.join(root, fh.read().strip())
        if os.path.isfile(os.path.join(path, STATE_FILE)):
            return path
    found = step_dirs(root)
    return found[-1][1] if found else None


def resolve(path: str) -> str:
    """A checkpoint folder from either a ``step-N`` folder or a checkpoint root (its latest)."""
    if os.path.isfile(os.path.join(path, STATE_FILE)):
        return path
    found = latest(path)
    if not found:
        raise UserError(f"{path}: no checkpoint here (neither {STATE_FILE} nor a step-N folder)")
    return found


def save(root: str, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         trainer_state: dict[str, Any], keep_last: int) -> str:
    """Write checkpoint ``step`` (every rank calls this); -> its folder."""
    rank = _rank()
    final = os.path.join(root, f"step-{step:08d}")
    tmp = final + ".tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp)
    torch.save(rng_state(), os.path.join(tmp, f"rng-{rank}.pt"))
    _barrier()
    if rank == 0:
        with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as fh:
            json.dump(trainer_state, fh, indent=1)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer = os.path.join(root, LATEST)
        with open(pointer + ".tmp", "w", encoding="utf-8") as fh:
            fh.write(os.path.basename(final) + "\n")
        os.replace(pointer + ".tmp", pointer)
        for _, old in step_dirs(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def read_state(path: str) -> dict[str, Any]:
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as fh:
        return json.load(fh)


def load(path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
         restore_rng: bool = True) -> dict[str, Any]:
    """Load model (and optimizer) state from ``path`` into this layout; -> the trainer state."""
    if optimizer is None:
        state = {"model": get_model_state_dict(model)}
    else:
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    if optimizer is None:
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    if restore_rng:
        rng_file = os.path.join(path, f"rng-{_rank()}.pt")
        if not os.path.isfile(rng_file):
            rng_file = os.path.join(path, "rng-0.pt")
        set_rng_state(torch.load(rng_file, weights_only=False))
    return read_state(path)
