"""Chat with any checkpoint: ``python -m train.chat_cli --checkpoint DIR --message "Hi"`` (also ``smelter chat``).

Each ``--message`` is one user turn of a running conversation: the conversation so far, formatted with the
chat template (train.chat) and ending in ``<|assistant|>``, is the prompt, and the reply stops at
``<|end_of_turn|>`` or ``<|endoftext|>``. Without ``--message`` it reads user turns from standard input,
one per line (``/reset`` starts over). When the conversation outgrows the model's context, the oldest turns
are dropped (the system message stays).

A reward model (a checkpoint of the reward stage) does not write: give the conversation with ``--message``
turns and the assistant ``--response`` to score; it prints the score, pooled over the reply as the model
was trained (``reward.pool``: at its ``<|end_of_turn|>``, the mean over its tokens, or per-token values).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from pipelines.errors import UserError
from train.chat import BadRow, ChatTemplate, tokenizer_path_of


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a step-N folder or a checkpoint root")
    p.add_argument("--message", action="append", default=[], metavar="TEXT",
                   help="a user turn (repeat for a multi-turn conversation); none: read turns from stdin")
    p.add_argument("--system", metavar="TEXT", help="a system message that opens the conversation")
    p.add_argument("--response", metavar="TEXT", help="reward models: the assistant reply to score")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu | cuda")


def load(checkpoint: str, device: str = "cpu"):
    """(model, trainer state, ChatTemplate) of a checkpoint, pretrained or post-trained."""
    from train import checkpoint as ckpt
    from train.model import ModelConfig
    from train.sample import load_model

    state = ckpt.read_state(ckpt.resolve(checkpoint))
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(state.get("model", {})) - known)
    if unknown:
        raise UserError(f"{checkpoint}: the checkpoint's model has fields this version of train/model.py lacks: "
                        f"{', '.join(unknown)}" + (" (reward models need ModelConfig.value_head)"
                                                   if "value_head" in unknown else ""))
    template = ChatTemplate.from_tokenizer_file(tokenizer_path_of(state))
    model, state = load_model(checkpoint, device)
    if template.vocab_size > model.cfg.vocab_size:
        raise UserError(f"{checkpoint}: the tokenizer has {template.vocab_size} tokens, the model "
                        f"{model.cfg.vocab_size}: not this model's tokenizer")
    return model, state, template


class Chat:
    """A running conversation with one model."""

    def __init__(self, model, template: ChatTemplate, system: str | None = None, max_new_tokens: int = 64,
                 temperature: float = 0.0, top_k: int | None = 40, seed: int = 0):
        self.model, self.template = model, template
        self.system = system
        self.max_new_tokens, self.temperature, self.top_k, self.seed = max_new_tokens, temperature, top_k, seed
        self.turns = 0
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []

    def _prompt_ids(self) -> list[int]:
        """The generation prompt, dropping the oldest exchanges while it leaves no room for a reply."""
        room = self.model.cfg.max_seq_len - min(self.max_new_tokens, self.model.cfg.max_seq_len // 2)
        while True:
            ids = self.template.encode_prompt(self.messages)
            first = 1 if self.messages[0]["role"] == "system" else 0
            if len(ids) <= room or len(self.messages) - first <= 1:
                break
            del self.messages[first:first + 2]  # the oldest user turn and its reply
        if len(ids) >= self.model.cfg.max_seq_len:
            raise UserError(f"the message is {len(ids)} tokens with the chat format; the model reads at most "
                            f"{self.model.cfg.max_seq_len}")
        return ids

    def say(self, text: str) -> str:
        """Add a user turn; -> the assistant's reply (also added to the conversation)."""
        from train.model import generate

        self.messages.append({"role": "user", "content": text})
        try:
            ids = self._prompt_ids()
        except (BadRow, UserError):
            self.messages.pop()
            raise
        # generate stops at one id: the end of turn; an EOD is cut off by decode_response
        new = generate(self.model, ids, self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                       eos_id=self.template.end_of_turn_id, seed=self.seed + self.turns)
        self.turns += 1
        reply = self.template.decode_response(new)
        self.messages.append({"role": "assistant", "content": reply if reply.strip() else "(empty)"})
        return reply


def score(model, template: ChatTemplate, state: dict, messages: list[dict]) -> float:
    """A reward model's score of a conversation ending with the assistant reply, read as the model was
    trained to (``reward.pool`` in its config; train.reward.score)."""
    from train.reward import score as reward_score

    if not messages or messages[-1]["role"] != "assistant":
        raise UserError("a reward model scores a conversation that ends with an assistant reply (--response)")
    prompt, reply = template.encode_prompt(messages[:-1]), template.encode_response(messages[-1]["content"])
    if len(prompt) + len(reply) > model.cfg.max_seq_len:
        raise UserError(f"the conversation is {len(prompt) + len(reply)} tokens; the model reads at most "
                        f"{model.cfg.max_seq_len}")
    model.reward_pool = ((state.get("config") or {}).get("reward") or {}).get("pool", "last")
    return float(reward_score(model, template, [prompt], [reply])[0])


def main(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be at least 1")
    from train.reward import is_reward_model

    model, state, template = load(args.checkpoint, args.device)
    stage = state.get("stage", "pretrain")
    try:
        if is_reward_model(state):
            if not args.message or args.response is None:
                raise UserError(f"{args.checkpoint} is a reward model: give --message (one or more) and "
                                "--response (the reply to score)")
            messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                [{"role": "user", "content": m} for m in args.message] + \
                [{"role": "assistant", "content": args.response}]
            print(f"reward model ({stage}): score {score(model, template, state, messages):.4f}")
            return 0
        if args.response is not None:
            raise UserError("--response is for reward models; this checkpoint writes its own replies")
        chat = Chat(model, template, args.system, args.max_new_tokens, args.temperature, args.top_k, args.seed)
        if args.message:
            for m in args.message:
                print(f"user: {m}")
                print(f"assistant: {chat.say(m)}")
            return 0
        interactive = sys.stdin.isatty()
        if interactive:
            print(f"chatting with {args.checkpoint} ({stage}); /reset starts over, Ctrl-D ends")
        while True:
            if interactive:
                print("you> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line:
                return 0
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.strip() == "/reset":
                chat.reset()
                print("(conversation cleared)")
                continue
            try:
                print(f"assistant: {chat.say(line)}", flush=True)
            except (UserError, BadRow) as e:
                print(f"(skipped: {e})", flush=True)
    except BadRow as e:
        raise UserError(f"bad message: {e}") from None


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m train.chat_cli", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    try:
        sys.exit(main(ap.parse_args()))
    except UserError as e:
        print(f"smelter chat: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
