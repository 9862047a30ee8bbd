"""Sample text from a checkpoint: ``python -m train.sample --checkpoint DIR --prompt "Once upon"``.

DIR is a ``step-N`` checkpoint folder or a checkpoint root (its ``latest``). The model's shape and the
plan come from the checkpoint's ``trainer_state.json``; the weights load through DCP into one process
whatever layout saved them; text goes through the plan's ``tokenizer.json`` (the `tokenizers` package).
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from pipelines.errors import UserError
from train import checkpoint


def load_model(path: str, device: str = "cpu"):
    """(model in eval mode, trainer state) from a checkpoint folder or root."""
    from train.model import ModelConfig, Transformer

    path = checkpoint.resolve(path)
    state = checkpoint.read_state(path)
    with torch.device(device):
        model = Transformer(ModelConfig(**state["model"]))
    model.init_weights(0)  # buffers (rotary tables); the weights come from the checkpoint
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        checkpoint.load(path, model, restore_rng=False)
    return model.eval(), state


def tokenizer_of(state: dict):
    """The checkpoint's tokenizer (``tokenizers.Tokenizer``: the trainer state's ``tokenizer`` path, else the
    plan's) and its end-of-document id."""
    from tokenizers import Tokenizer

    from train.chat import tokenizer_path_of

    tok = Tokenizer.from_file(tokenizer_path_of(state))
    return tok, tok.token_to_id("<|endoftext|>")


def sample(path: str, prompt: str, max_new_tokens: int = 100, temperature: float = 0.8, top_k: int | None = 40,
           seed: int | None = 0, device: str = "cpu") -> str:
    """The prompt's continuation as text (the new tokens only)."""
    from train.model import generate

    model, state = load_model(path, device)
    tok, eod = tokenizer_of(state)
    ids = tok.encode(prompt, add_special_tokens=False).ids or ([eod] if eod is not None else [])
    if not ids:
        raise UserError("empty prompt and the tokenizer has no end-of-document token to start from")
    new = generate(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, eos_id=eod, seed=seed)
    return tok.decode(new, skip_special_tokens=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.sample", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, metavar="DIR", help="a step-N folder or a checkpoint root")
    ap.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1, help="how many continuations (seeds seed, seed+1, ...)")
    args = ap.parse_args(argv)
    try:
        for i in range(args.samples):
            text = sample(args.checkpoint, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                          args.seed + i)
            print(f"--- sample {i + 1}\n{args.prompt}{text}")
    except UserError as e:
        print(f"smelter sample: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
