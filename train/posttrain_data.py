"""Post-training data: JSONL files in the formats the ecosystem writes, tokenized with the chat template,
every bad row counted by reason and never used; and the packing of SFT conversations into rows.

Formats (one JSON object per line; other keys are ignored):

* SFT: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]}``
* preference pairs (DPO, reward model): ``{"prompt": str | messages, "chosen": str, "rejected": str}``,
  or TRL's conversational form where ``chosen`` / ``rejected`` are message lists ending with the assistant
  reply (their earlier messages, identical in both, continue the prompt; ``prompt`` may then be absent)
* prompts with a verifiable answer (GRPO): ``{"prompt": str | messages, "answer": str | number,
  "verifier": "exact" | "numeric"}``

``max_len`` bounds the tokens of each formatted example: the whole conversation with its EOD (SFT), the
prompt plus the longer reply (pairs), the prompt alone (prompts: pass the model's length minus the tokens
to generate). Longer rows are bad rows (``too_long``), never truncated.

A file that does not exist or is not UTF-8 is a UserError; everything wrong inside a line is a bad row.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from pipelines.errors import UserError
from train.chat import BadRow, ChatTemplate, check_messages
from train.verifiers import VERIFIERS

#: the label of positions that carry no loss (torch's cross_entropy default ignore_index)
IGNORE_INDEX = -100
#: how many bad lines a report keeps verbatim
KEEP_BAD = 10


@dataclass
class DataReport:
    """What a loader made of one file: ``rows`` non-blank lines read, ``used`` examples returned, ``bad``
    the count of each reason a row was refused, ``first_bad`` the first few (line number, reason, detail)."""

    path: str
    rows: int = 0
    used: int = 0
    bad: dict[str, int] = field(default_factory=dict)
    first_bad: list[tuple[int, str, str]] = field(default_factory=list)

    def add_bad(self, line_no: int, reason: str, detail: str = "") -> None:
        self.bad[reason] = self.bad.get(reason, 0) + 1
        if len(self.first_bad) < KEEP_BAD:
            self.first_bad.append((line_no, reason, detail[:200]))

    @property
    def n_bad(self) -> int:
        return sum(self.bad.values())

    def summary(self) -> str:
        """One line: ``PATH: R rows, U used, B bad (reason n, ...); first: line L reason: detail``."""
        text = f"{self.path}: {self.rows} rows, {self.used} used"
        if self.bad:
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.bad.items(), key=lambda kv: (-kv[1], kv[0])))
            line, reason, detail = self.first_bad[0]
            text += f", {self.n_bad} bad ({reasons}); first: line {line} {reason}" + (f": {detail}" if detail else "")
        return text

    def to_json(self) -> dict:
        return {"path": self.path, "rows": self.rows, "used": self.used, "bad": dict(sorted(self.bad.items())),
                "first_bad": [{"line": n, "reason": r, "detail": d} for n, r, d in self.first_bad]}


@dataclass
class SFTExample:
    """One conversation: its ids (EOD last) and the mask of the tokens to learn (assistant turns)."""

    ids: list[int]
    mask: list[bool]


@dataclass
class PairExample:
    """A preference pair: the generation prompt (ends with ``<|assistant|>``) and both replies' ids (each
    ends with ``<|end_of_turn|>``)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


@dataclass
class PromptExample:
    """A prompt to sample replies for, with the answer a verifier checks them against."""

    prompt_ids: list[int]
    prompt: str | list[dict]
    answer: str
    verifier: str


@dataclass
class PackedRow:
    """One training row of ``seq_len`` positions holding whole conversations side by side.

    ``tokens`` the inputs, ``labels`` the next token to predict or IGNORE_INDEX, ``doc_ids`` the number of
    the conversation each position belongs to (0, 1, ... in the row; padding takes the next number), and
    ``positions`` the position within its conversation (restarting at 0), for rotary embeddings.
    """

    tokens: torch.Tensor
    labels: torch.Tensor
    doc_ids: torch.Tensor
    positions: torch.Tensor


# ---------------------------------------------------------------------------------------------------
# reading


def read_jsonl(path: str, report: DataReport):
    """Yield (line number, parsed object) of each non-blank line; lines that are not a JSON object are
    counted in ``report`` (not_json, not_object) and skipped. Missing file or not UTF-8: UserError."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}: not UTF-8 (line {line}, byte {e.start}): post-training data must be "
                        "UTF-8 JSONL") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        report.rows += 1
        try:
            obj = json.loads(line)
        except ValueError as e:
            report.add_bad(n, "not_json", str(e))
            continue
        if not isinstance(obj, dict):
            report.add_bad(n, "not_object", f"a JSON {type(obj).__name__}, not an object")
            continue
        yield n, obj


def _load(path: str, parse):
    report = DataReport(path=str(path))
    out = []
    for n, obj in read_jsonl(str(path), report):
        try:
            out.append(parse(obj))
        except BadRow as e:
            report.add_bad(n, e.reason, e.detail)
    report.used = len(out)
    return out, report


def _field(obj: dict, key: str):
    if key not in obj or obj[key] is None:
        raise BadRow("missing_field", f"no {key!r}")
    return obj[key]


def _check_len(n: int, max_len: int | None, what: str) -> None:
    if max_len is not None and n > max_len:
        raise BadRow("too_long", f"{what} is {n} tokens, over max_len {max_len}")


def load_sft(path: str, template: ChatTemplate, max_len: int | None) -> tuple[list[SFTExample], DataReport]:
    """SFT conversations ``{"messages": [...]}`` -> examples (ids, mask), and the file's report."""

    def parse(obj):
        ids, mask = template.encode_conversation(_field(obj, "messages"), require_assistant=True)
        _check_len(len(ids), max_len, "the conversation")
        return SFTExample(ids, mask)

    return _load(path, parse)


def _pair_parts(obj: dict):
    """(prompt as str or messages, chosen text, rejected text) of a pair row in either form."""
    chosen, rejected = _field(obj, "chosen"), _field(obj, "rejected")
    if isinstance(chosen, list) or isinstance(rejected, list):
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise BadRow("wrong_type", "chosen and rejected must both be strings or both message lists")
        chosen, rejected = check_messages(chosen), check_messages(rejected)
        for name, conv in (("chosen", chosen), ("rejected", rejected)):
            if conv[-1]["role"] != "assistant":
                raise BadRow("no_assistant_turn", f"{name} does not end with an assistant message")
        if chosen[:-1] != rejected[:-1]:
            raise BadRow("prompt_mismatch", "chosen and rejected differ before their last message")
        prompt = obj.get("prompt")
        if prompt is None:
            prompt = []
        elif isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        elif not isinstance(prompt, list):
            raise BadRow("wrong_type", f"prompt must be a string or a list of messages, not {type(prompt).__name__}")
        prompt = prompt + chosen[:-1]
        if not prompt:
            raise BadRow("missing_field", "no 'prompt' and no messages before the replies")
        return prompt, chosen[-1]["content"], rejected[-1]["content"]
    return _field(obj, "prompt"), chosen, rejected


def load_pairs(path: str, template: ChatTemplate, max_len: int | None) -> tuple[list[PairExample], DataReport]:
    """Preference pairs -> (prompt, chosen, rejected) ids, and the file's report."""

    def parse(obj):
        prompt, chosen, rejected = _pair_parts(obj)
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise BadRow("wrong_type", "chosen and rejected must be strings or message lists")
        if chosen.strip() == rejected.strip():
            raise BadRow("chosen_equals_rejected", "the two replies are the same")
        p = template.encode_prompt(prompt)
        c, r = template.encode_response(chosen), template.encode_response(rejected)
        _check_len(len(p) + max(len(c), len(r)), max_len, "prompt + reply")
        return PairExample(p, c, r)

    return _load(path, parse)


def answer_text(answer) -> str:
    """A row's answer as text: strings as they are, numbers (not booleans) written out."""
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise BadRow("wrong_type", f"answer must be a string or a number, not {type(answer).__name__}")
    text = answer if isinstance(answer, str) else repr(answer)
    if not text.strip():
        raise BadRow("empty_content", "the answer is empty")
    return text


def load_prompts(path: str, template: ChatTemplate, max_len: int | None,
                 default_verifier: str | None = None) -> tuple[list[PromptExample], DataReport]:
    """Prompts with answers ``{"prompt", "answer", "verifier"}`` -> examples, and the file's report. A row
    without ``verifier`` takes ``default_verifier`` (a bad row when that is None too)."""
    if default_verifier is not None and default_verifier not in VERIFIERS:
        raise UserError(f"unknown verifier {default_verifier!r}; known: {', '.join(sorted(VERIFIERS))}")

    def parse(obj):
        prompt = _field(obj, "prompt")
        answer = answer_text(_field(obj, "answer"))
        verifier = obj.get("verifier", default_verifier)
        if verifier is None:
            raise BadRow("missing_field", "no 'verifier' (and no default verifier)")
        if verifier not in VERIFIERS:
            raise BadRow("unknown_verifier", f"{verifier!r}; known: {', '.join(sorted(VERIFIERS))}")
        ids = template.encode_prompt(prompt)
        _check_len(len(ids), max_len, "the prompt")
        return PromptExample(ids, prompt, answer, verifier)

    return _load(path, parse)


# ---------------------------------------------------------------------------------------------------
# packing and batching


def sft_inputs(example: SFTExample) -> tuple[list[int], list[int]]:
    """(inputs, labels) of one conversation: inputs ids[:-1], labels ids[1:] where the mask of the
    predicted token is set, else IGNORE_INDEX."""
    ids, mask = example.ids, example.mask
    return ids[:-1], [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:], strict=True)]


def pack_sft(examples: list[SFTExample], seq_len: int, pad_id: int = 1, packing: bool = True) -> list[PackedRow]:
    """Place conversations into rows of ``seq_len`` positions (each takes len(ids) - 1), never splitting one.

    Deterministic first-fit-decreasing: longest first (ties in input order), each into the first row with
    room, else a new row. ``packing=False`` gives one conversation per row. The rest of a row is padding:
    ``pad_id`` tokens (pass the template's; 1 is ``<|pad|>`` in smelter's tokenizers), IGNORE_INDEX labels,
    its own doc id. A conversation longer than the row is a ValueError (the loaders' max_len prevents it).
    """
    sizes = [len(e.ids) - 1 for e in examples]
    for i, n in enumerate(sizes):
        if n > seq_len:
            raise ValueError(f"conversation {i} needs {n} positions, over seq_len {seq_len}")
        if n < 1:
            raise ValueError(f"conversation {i} has fewer than 2 tokens")
    order = sorted(range(len(examples)), key=lambda i: (-sizes[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        for r in range(len(rows)) if packing else ():
            if free[r] >= sizes[i]:
                rows[r].append(i)
                free[r] -= sizes[i]
                break
        else:
            rows.append([i])
            free.append(seq_len - sizes[i])
    out = []
    for members in rows:
        tokens, labels, doc_ids, positions = [], [], [], []
        for d, i in enumerate(members):
            x, y = sft_inputs(examples[i])
            tokens += x
            labels += y
            doc_ids += [d] * len(x)
            positions += range(len(x))
        pad = seq_len - len(tokens)
        tokens += [pad_id] * pad
        labels += [IGNORE_INDEX] * pad
        doc_ids += [len(members)] * pad
        positions += range(pad)
        out.append(PackedRow(*(torch.tensor(v, dtype=torch.long) for v in (tokens, labels, doc_ids, positions))))
    return out


def stack_rows(rows: list[PackedRow]) -> PackedRow:
    """Packed rows as one batch: each field becomes a [B, seq_len] tensor."""
    return PackedRow(*(torch.stack([getattr(r, f) for r in rows]) for f in ("tokens", "labels", "doc_ids",
                                                                             "positions")))


def prompt_response_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int = 1,
                          seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, labels) [B, T] for the log-probability of replies after prompts (DPO, GRPO).

    Row b holds ``prompts[b] + responses[b]`` minus its last token as inputs, right-padded with ``pad_id``
    to the longest (or ``seq_len``); labels are the next tokens where they belong to the reply and
    IGNORE_INDEX on the prompt and padding, so summing token log-probs over labels != IGNORE_INDEX gives
    log p(reply | prompt).
    """
    if len(prompts) != len(responses):
        raise ValueError("as many prompts as responses")
    seqs = [p + r for p, r in zip(prompts, responses, strict=True)]
    width = max(len(s) - 1 for s in seqs) if seq_len is None else seq_len
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    for b, (p, s) in enumerate(zip(prompts, seqs, strict=True)):
        n = len(s) - 1
        if n > width:
            raise ValueError(f"row {b} needs {n} positions, over {width}")
        tokens[b, :n] = torch.tensor(s[:-1])
        labels[b, len(p) - 1:n] = torch.tensor(s[len(p):])
    return tokens, labels


def pair_rows(pairs: list[PairExample]) -> tuple[list[list[int]], list[list[int]]]:
    """(prompts, replies) of 2k rows for k pairs: every prompt with its chosen reply, then with its
    rejected one (one forward scores both sides)."""
    return [p.prompt_ids for p in pairs] * 2, [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]


def score_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int = 1,
                seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [B, T], last [B]) for a reward model: row b is the whole ``prompts[b] + responses[b]``
    right-padded with ``pad_id``; ``last[b]`` the index of its last token (the reply's
    ``<|end_of_turn|>``), where the score is read."""
    if len(prompts) != len(responses):
        raise ValueError("as many prompts as responses")
    seqs = [p + r for p, r in zip(prompts, responses, strict=True)]
    width = max(len(s) for s in seqs) if seq_len is None else seq_len
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for b, s in enumerate(seqs):
        if len(s) > width:
            raise ValueError(f"row {b} has {len(s)} tokens, over {width}")
        tokens[b, :len(s)] = torch.tensor(s)
    return tokens, torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long)
