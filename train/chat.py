"""The chat template every post-training stage formats conversations with, built on the tokenizer's
role tokens.

A conversation is, for each message, ``<|role|>`` + the content's tokens + ``<|end_of_turn|>``, then one
``<|endoftext|>`` (EOD)::

    <|system|> You are terse.<|end_of_turn|><|user|> 2 + 3?<|end_of_turn|><|assistant|> 5<|end_of_turn|><|endoftext|>

Content is encoded exactly as written (no added space, no stripping), and special tokens that appear in
content are encoded as plain text: a user who types ``<|assistant|>`` cannot open an assistant turn.
SFT learns the content of assistant messages and their ``<|end_of_turn|>`` (the model must learn to stop);
a generation prompt is the conversation so far followed by ``<|assistant|>``.

Input that cannot be formatted raises :class:`BadRow` with a short snake_case reason, which the loaders
in ``train.posttrain_data`` count per file instead of using the row.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from pipelines.errors import UserError
from tokenizer.bpe import DEFAULT_EOD

#: the roles a message may have, and the special token of each
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>", "tool": "<|tool|>"}
END_OF_TURN = "<|end_of_turn|>"
PAD = "<|pad|>"


class BadRow(ValueError):
    """One input row (or conversation) that cannot be used; ``reason`` is a short snake_case word that
    reports group by, ``detail`` says what exactly was wrong."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def tokenizer_path_of(trainer_state: dict) -> str:
    """The tokenizer.json of a checkpoint: ``trainer_state["tokenizer"]`` when present (every post-training
    checkpoint has it), else the ``tokenizer.path`` of the plan's ``train_manifest.json`` (pretraining)."""
    path = trainer_state.get("tokenizer")
    if path:
        return str(path)
    plan = trainer_state.get("plan")
    if not plan:
        raise UserError("the checkpoint names neither a tokenizer nor a training plan: cannot find its tokenizer")
    manifest = os.path.join(plan, "train_manifest.json")
    try:
        with open(manifest, encoding="utf-8") as fh:
            return json.load(fh)["tokenizer"]["path"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{manifest}: cannot read the tokenizer path of the checkpoint's plan: {e}") from None


def check_messages(messages, *, require_assistant: bool = False) -> list[dict]:
    """``messages`` as a validated list of ``{"role", "content"}`` dicts (other keys are ignored).

    Raises BadRow: wrong_type (not a list, a message not an object, content not a string), missing_field,
    unknown_role, empty_content (empty or only white space), no_assistant_turn (when required).
    """
    if not isinstance(messages, list):
        raise BadRow("wrong_type", f"messages must be a list, not {type(messages).__name__}")
    if not messages:
        raise BadRow("empty_content", "messages is an empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRow("wrong_type", f"message {i} is a {type(m).__name__}, not an object")
        for key in ("role", "content"):
            if key not in m:
                raise BadRow("missing_field", f"message {i} has no {key!r}")
        role, content = m["role"], m["content"]
        if role not in ROLE_TOKENS:
            raise BadRow("unknown_role", f"message {i} has role {role!r} (known: {', '.join(ROLE_TOKENS)})")
        if not isinstance(content, str):
            raise BadRow("wrong_type", f"message {i} content is a {type(content).__name__}, not a string")
        if not content.strip():
            raise BadRow("empty_content", f"message {i} ({role}) has empty content")
        out.append({"role": role, "content": content})
    if require_assistant and not any(m["role"] == "assistant" for m in out):
        raise BadRow("no_assistant_turn", "the conversation has no assistant message to learn")
    return out


@dataclass
class ChatTemplate:
    """Formats conversations into token ids with a tokenizer's role tokens (see the module docstring)."""

    tokenizer: object  # tokenizers.Tokenizer
    role_ids: dict[str, int]
    end_of_turn_id: int
    eod_id: int
    pad_id: int
    path: str = ""

    @classmethod
    def from_tokenizer_file(cls, path: str) -> ChatTemplate:
        """Load ``path`` (a tokenizer.json, or any format ``tokenizer.bpe.load_pretrained`` reads); it must
        carry the role, end-of-turn, pad and EOD special tokens (every smelter tokenizer does)."""
        from tokenizer.bpe import load_pretrained

        tok = load_pretrained(str(path))
        return cls.from_tokenizer(tok, str(path))

    @classmethod
    def from_tokenizer(cls, tok, path: str = "") -> ChatTemplate:
        needed = [*ROLE_TOKENS.values(), END_OF_TURN, DEFAULT_EOD, PAD]
        ids = {t: tok.token_to_id(t) for t in needed}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise UserError(f"{path or 'the tokenizer'}: lacks the chat special tokens {' '.join(missing)} "
                            "(train it with smelter's tokenizer, which adds tokenizer.bpe.DEFAULT_SPECIAL_TOKENS)")
        tok.encode_special_tokens = True  # special tokens written in content are plain text
        return cls(tokenizer=tok, role_ids={r: ids[t] for r, t in ROLE_TOKENS.items()},
                   end_of_turn_id=ids[END_OF_TURN], eod_id=ids[DEFAULT_EOD], pad_id=ids[PAD], path=path)

    @property
    def stop_ids(self) -> tuple[int, int]:
        """Generation stops at either: the end of the assistant's turn, or of the whole document."""
        return (self.end_of_turn_id, self.eod_id)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    # ---- encoding

    def encode_text(self, text: str) -> list[int]:
        """The ids of plain text (special tokens inside it are plain text too)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def _encode_contents(self, messages: list[dict]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch([m["content"] for m in messages], add_special_tokens=False)]

    def encode_conversation(self, messages, *, require_assistant: bool = True) -> tuple[list[int], list[bool]]:
        """(ids, train_mask) of a whole conversation, EOD at the end. The mask is True exactly on the
        content tokens of assistant messages and their ``<|end_of_turn|>``; False on role tokens, other
        roles' turns and the EOD. Raises BadRow (see :func:`check_messages`)."""
        messages = check_messages(messages, require_assistant=require_assistant)
        ids: list[int] = []
        mask: list[bool] = []
        for m, content in zip(messages, self._encode_contents(messages), strict=True):
            learn = m["role"] == "assistant"
            ids.append(self.role_ids[m["role"]])
            mask.append(False)
            ids.extend(content)
            ids.append(self.end_of_turn_id)
            mask.extend([learn] * (len(content) + 1))
        ids.append(self.eod_id)
        mask.append(False)
        return ids, mask

    def prompt_messages(self, prompt) -> list[dict]:
        """A prompt as messages: a string is one user message; a list is checked and must not end with
        an assistant message (the model is to write that one). Raises BadRow."""
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        elif not isinstance(prompt, list):
            raise BadRow("wrong_type", f"prompt must be a string or a list of messages, not {type(prompt).__name__}")
        messages = check_messages(prompt)
        if messages[-1]["role"] == "assistant":
            raise BadRow("prompt_ends_with_assistant", "the prompt's last message is already the assistant's")
        return messages

    def encode_prompt(self, prompt) -> list[int]:
        """The conversation so far (a string = one user message), then ``<|assistant|>``: what the model
        continues to write its reply. No EOD. Raises BadRow."""
        messages = self.prompt_messages(prompt)
        ids: list[int] = []
        for m, content in zip(messages, self._encode_contents(messages), strict=True):
            ids.append(self.role_ids[m["role"]])
            ids.extend(content)
            ids.append(self.end_of_turn_id)
        ids.append(self.role_ids["assistant"])
        return ids

    def encode_response(self, text) -> list[int]:
        """An assistant reply as it follows a prompt: its content tokens, then ``<|end_of_turn|>``.
        ``encode_prompt(p) + encode_response(r)`` equals the conversation's ids without the EOD."""
        if not isinstance(text, str):
            raise BadRow("wrong_type", f"a reply must be a string, not {type(text).__name__}")
        if not text.strip():
            raise BadRow("empty_content", "the reply is empty")
        return self.encode_text(text) + [self.end_of_turn_id]

    # ---- decoding

    def decode_response(self, ids) -> str:
        """The text of generated ids up to (not including) the first stop id; special tokens skipped."""
        ids = [int(i) for i in ids]
        stops = set(self.stop_ids)
        for n, i in enumerate(ids):
            if i in stops:
                ids = ids[:n]
                break
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def decode(self, ids) -> str:
        """All ids as text, special tokens written out (for showing formatted conversations)."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
