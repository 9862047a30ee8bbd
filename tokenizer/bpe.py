"""Byte-level BPE tokenizers: load any supported format as one HF ``tokenizers.Tokenizer``, and encode
with tiktoken when it gives the same ids faster.

Every tokenizer smelter uses ends up as an HF ``Tokenizer`` (saved as ``tokenizer.json`` beside the
token files), so the trainer and later stages load one format. Encoding takes the fastest exact path:

* tiktoken, when the HF tokenizer is a byte-level BPE that tiktoken can express: no normalizer, a
  byte-level pre-tokenizer whose split pattern is known (GPT-2's, or an explicit ``Split`` regex
  before a regex-free ``ByteLevel``), and merges whose results appear in the order of their ids (so
  tiktoken's "merge the pair whose result has the lowest rank" picks what HF's "apply the lowest
  merge" picks). The ranks are the token ids; tiktoken's ``Encoding`` is built here from them, never
  from a named encoding (which would download).
* HF ``tokenizers`` in batches otherwise.

Special tokens found in a document's text are encoded as plain text on both paths: a web page that
contains ``<|endoftext|>`` must not inject an end-of-document marker (HF: ``encode_special_tokens``;
tiktoken: ``encode_ordinary``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipelines.errors import UserError

log = logging.getLogger(__name__)

#: GPT-2's pre-tokenization pattern (what HF's ``ByteLevel(use_regex=True)`` applies)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
#: patterns a tiktoken ranks file may name (``pattern:`` in the spec); a literal regex is taken as is
PATTERNS = {
    "gpt2": GPT2_PATTERN,
    "cl100k": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
              r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}

#: the end-of-document token smelter appends to every document unless the spec names another
DEFAULT_EOD = "<|endoftext|>"
#: special tokens every smelter tokenizer carries: end of document, padding, and the chat roles and
#: end-of-turn marker the post-training stages (SFT, DPO, GRPO) format conversations with
DEFAULT_SPECIAL_TOKENS = [DEFAULT_EOD, "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>",
                          "<|end_of_turn|>"]


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the alphabet of byte-level BPE vocabularies).

    Printable Latin-1 bytes map to themselves; the other 68 bytes map, in byte order, to code points
    from 256 up.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_unicode().items()}


@lru_cache(maxsize=1)
def _decode_table() -> dict[int, str]:
    """str.translate table: byte-level character -> the Latin-1 character of its byte; any other
    character below U+0144 -> U+FFFF, which Latin-1 cannot encode."""
    table = {c: "\uffff" for c in range(0x144)}
    table.update({ord(c): chr(b) for c, b in unicode_to_byte().items()})
    return table


def token_bytes(token: str) -> bytes | None:
    """The bytes a byte-level vocabulary entry stands for; None when it is not byte-level."""
    try:
        return token.translate(_decode_table()).encode("latin-1")
    except UnicodeEncodeError:
        return None


def token_str(data: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in data)


# ---------------------------------------------------------------------------------------------------
# building HF tokenizers from the supported files


def _byte_level_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], pattern: str = GPT2_PATTERN,
                          ignore_merges: bool = False):
    """An HF byte-level BPE with GPT-2's conventions (no prefix space, no normalizer)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    if pattern == GPT2_PATTERN:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read JSON: {e}") from None


def from_vocab_merges(vocab_path: str, merges_path: str):
    """GPT-2 style ``vocab.json`` + ``merges.txt`` (or OpenAI's ``encoder.json`` + ``vocab.bpe``)."""
    from tokenizers import models

    try:
        vocab, merges = models.BPE.read_file(vocab_path, merges_path)
    except Exception as e:  # tokenizers raises a plain Exception on a malformed file
        raise UserError(f"{vocab_path} + {merges_path}: not a vocabulary and merges pair: {e}") from None
    return _byte_level_tokenizer(vocab, merges)


def read_tiktoken_ranks(path: str) -> dict[bytes, int]:
    """A tiktoken ranks file: one ``<base64 token> <rank>`` per line."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError:
                raise UserError(f"{path}:{n}: not a tiktoken ranks line (base64 token, space, rank)") from None
    if not ranks:
        raise UserError(f"{path}: empty tiktoken ranks file")
    return ranks


def from_tiktoken_ranks(ranks: dict[bytes, int], pattern: str):
    """The HF tokenizer that encodes like tiktoken with these ranks.

    tiktoken merges, among adjacent pieces, the pair whose concatenation has the lowest rank. In HF
    terms every way to split a token into two vocabulary entries is a merge ranked by the token's rank,
    and a pre-token that is itself in the vocabulary is taken whole (``ignore_merges``).
    """
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise UserError(f"the tiktoken ranks lack single bytes {missing[:5]}...: not a byte-level BPE")
    vocab = {token_str(t): r for t, r in ranks.items()}
    merges = []
    for t, r in ranks.items():
        for k in range(1, len(t)):
            left, right = ranks.get(t[:k]), ranks.get(t[k:])
            if left is not None and right is not None:
                merges.append((r, left, right, token_str(t[:k]), token_str(t[k:])))
    merges.sort()
    return _byte_level_tokenizer(vocab, [(a, b) for *_, a, b in merges], pattern, ignore_merges=True)


def add_special_tokens(tok, tokens: list[str]) -> None:
    """Add ``tokens`` as special tokens (those already in the vocabulary keep their ids)."""
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])


def load_pretrained(path: str, pattern: str = "gpt2"):
    """Load a pretrained tokenizer: ``tokenizer.json``, ``vocab.json`` + ``merges.txt``, ``encoder.json``
    + ``vocab.bpe``, or a tiktoken ranks file, given as the file or the folder that holds it."""
    from tokenizers import Tokenizer

    if os.path.isdir(path):
        def has(*names):
            return all(os.path.isfile(os.path.join(path, n)) for n in names)

        if has("tokenizer.json"):
            path = os.path.join(path, "tokenizer.json")
        elif has("vocab.json", "merges.txt"):
            return from_vocab_merges(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt"))
        elif has("encoder.json", "vocab.bpe"):
            return from_vocab_merges(os.path.join(path, "encoder.json"), os.path.join(path, "vocab.bpe"))
        else:
            found = sorted(f for f in os.listdir(path) if f.endswith(".tiktoken"))
            if len(found) != 1:
                raise UserError(f"{path}: no tokenizer here: expected tokenizer.json, vocab.json + merges.txt, "
                                "encoder.json + vocab.bpe, or one *.tiktoken ranks file")
            path = os.path.join(path, found[0])
    elif not os.path.isfile(path):
        raise UserError(f"{path}: no such tokenizer file or folder")
    name = os.path.basename(path)
    folder = os.path.dirname(path)
    if name.endswith(".json"):
        data = _read_json(path)
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            try:
                return Tokenizer.from_file(path)
            except Exception as e:  # tokenizers raises a plain Exception on a bad file
                raise UserError(f"{path}: not a valid tokenizer.json: {e}") from None
        for merges in ("merges.txt", "vocab.bpe"):
            if os.path.isfile(os.path.join(folder, merges)):
                return from_vocab_merges(path, os.path.join(folder, merges))
        raise UserError(f"{path}: a vocabulary without its merges (merges.txt or vocab.bpe beside it)")
    return from_tiktoken_ranks(read_tiktoken_ranks(path), PATTERNS.get(pattern, pattern))


# ---------------------------------------------------------------------------------------------------
# the tiktoken fast path


@dataclass
class TiktokenForm:
    """What tiktoken needs to encode exactly like an HF tokenizer."""

    pattern: str
    ranks: dict[bytes, int]
    special: dict[str, int]


def tiktoken_form(tok) -> TiktokenForm | str:
    """The tiktoken form of HF tokenizer ``tok``, or the reason there is none."""
    data = json.loads(tok.to_str())
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        return f"model is {model.get('type')}, not BPE"
    if data.get("normalizer") is not None:
        return "it has a normalizer"
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            return f"BPE {key} is set"
    if model.get("byte_fallback"):
        return "BPE byte_fallback is set"
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        pattern = GPT2_PATTERN
    elif (pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 2
          and pre["pretokenizers"][0].get("type") == "Split"
          and "Regex" in (pre["pretokenizers"][0].get("pattern") or {})
          and pre["pretokenizers"][0].get("behavior") == "Isolated" and not pre["pretokenizers"][0].get("invert")
          and pre["pretokenizers"][1].get("type") == "ByteLevel" and not pre["pretokenizers"][1].get("use_regex")
          and not pre["pretokenizers"][1].get("add_prefix_space")):
        pattern = pre["pretokenizers"][0]["pattern"]["Regex"]
    else:
        return "the pre-tokenizer is not a plain byte-level one"
    added = data.get("added_tokens") or []
    if any(not a.get("special") for a in added):
        return "it has non-special added tokens"
    special = {a["content"]: a["id"] for a in added}
    vocab: dict[str, int] = model.get("vocab") or {}
    special_ids = set(special.values())
    ranks: dict[bytes, int] = {}
    for t, i in vocab.items():
        if i in special_ids:
            continue
        b = token_bytes(t)
        if b is None:
            return f"vocabulary entry {t!r} is not byte-level"
        ranks[b] = i
    if any(bytes([b]) not in ranks for b in range(256)):
        return "the vocabulary lacks some single bytes"
    # HF applies the lowest merge first; tiktoken merges the pair whose result ranks lowest. They agree
    # when results appear in id order along the merge list.
    last = -1
    reached = set()
    for m in model.get("merges") or []:
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        rid = vocab.get(left + right)
        if rid is None or rid in special_ids:
            return f"merge {left!r} + {right!r} makes no vocabulary entry"
        if rid < last:
            return "merge results are not in id order"
        last = rid
        reached.add(rid)
    if not model.get("ignore_merges"):
        # an entry no merge makes is never produced by HF; tiktoken would take it for a whole pre-token
        for b, i in list(ranks.items()):
            if len(b) > 1 and i not in reached:
                del ranks[b]
    return TiktokenForm(pattern=pattern, ranks=ranks, special=special)


def tiktoken_encoding(form: TiktokenForm):
    import tiktoken

    return tiktoken.Encoding("smelter-local", pat_str=form.pattern, mergeable_ranks=form.ranks,
                             special_tokens=form.special)


# ---------------------------------------------------------------------------------------------------
# encoding


class Encoder:
    """Encodes documents to numpy id arrays with the tokenizer in a ``tokenizer.json``.

    ``engine``: ``auto`` (tiktoken when exact, else HF), ``tiktoken`` (error when not expressible) or
    ``hf``. ``threads`` parallelises tiktoken over documents (it releases the GIL); HF batches use
    their own thread pool.
    """

    def __init__(self, tokenizer_json: str, engine: str = "auto", threads: int | None = None, loaded=None):
        from tokenizers import Tokenizer

        # ``loaded``: the same tokenizer already in memory (the driver just saved it), not read again
        self.hf = loaded if loaded is not None else Tokenizer.from_file(tokenizer_json)
        self.hf.encode_special_tokens = True  # specials in a document's text are plain text
        self.tk = None
        self.reason = ""
        if engine in ("auto", "tiktoken"):
            form = tiktoken_form(self.hf)
            if isinstance(form, str):
                if engine == "tiktoken":
                    raise UserError(f"{tokenizer_json}: tiktoken cannot express this tokenizer: {form}")
                self.reason = form
            else:
                self.tk = tiktoken_encoding(form)
        self.engine = "tiktoken" if self.tk is not None else "hf"
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.threads) if self.tk is not None and self.threads > 1 else None

    def _tk_one(self, text: str) -> np.ndarray:
        return self.tk.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """The ids of each text (uint32 arrays), in order."""
        if self.tk is not None:
            if self._pool is None or len(texts) == 1:
                return [self._tk_one(t) for t in texts]
            return list(self._pool.map(self._tk_one, texts))
        encodings = self.hf.encode_batch_fast(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32) for e in encodings]

    def encode_stream(self, texts, window_bytes: int = 8 << 20):
        """Yield each text's ids in order while later texts are encoded: a rolling window of at most
        ``window_bytes`` of text in flight, so threads never wait at batch boundaries."""
        from collections import deque

        if self._pool is None:
            batch: list[str] = []
            size = 0
            for t in texts:
                batch.append(t)
                size += len(t)
                if size >= window_bytes:
                    yield from self.encode_batch(batch)
                    batch, size = [], 0
            if batch:
                yield from self.encode_batch(batch)
            return
        pending: deque = deque()
        size = 0
        for t in texts:
            pending.append((len(t), self._pool.submit(self._tk_one, t)))
            size += len(t)
            while size > window_bytes and len(pending) > 1:
                n, fut = pending.popleft()
                size -= n
                yield fut.result()
        while pending:
            yield pending.popleft()[1].result()

    def encode_hf(self, texts: list[str]) -> list[list[int]]:
        """HF tokenizers' ids, whatever the engine (the reference the fast path must equal)."""
        return [e.ids for e in self.hf.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
