"""Train a byte-level BPE with HF ``tokenizers`` on a deterministic sample of a run's documents.

The sample is the ``sample_docs`` documents whose ids hash lowest (BLAKE2b of seed and id), over all
sources at once: every source contributes in proportion to its size, and the same run gives the same
sample whatever the shard order or the machine. Only the ``id`` column is read for the choice; the
chosen texts are read afterwards.
"""

from __future__ import annotations

import hashlib
import heapq
import logging

import pyarrow as pa

from tokenizer.bpe import _byte_level_tokenizer

log = logging.getLogger(__name__)


def _key(seed: int, doc_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=8).digest()


def sample_texts(shard_paths: list[str], sample_docs: int, seed: int = 0, max_doc_chars: int | None = None,
                 text_column: str = "text") -> list[str]:
    """The texts of the ``sample_docs`` documents with the lowest id hashes, in hash order."""
    best: list[tuple[bytes, int, int, int]] = []  # max-heap by negated key: (neg key, shard, batch, row)
    for s, path in enumerate(shard_paths):
        with pa.memory_map(path) as src:
            reader = pa.ipc.open_file(src)
            for b in range(reader.num_record_batches):
                ids = reader.get_batch(b).column("id").to_pylist()
                for r, doc_id in enumerate(ids):
                    k = bytes(255 - x for x in _key(seed, doc_id))  # invert: heap keeps the largest out
                    item = (k, s, b, r)
                    if len(best) < sample_docs:
                        heapq.heappush(best, item)
                    elif item > best[0]:
                        heapq.heapreplace(best, item)
    chosen = sorted(best, reverse=True)  # lowest hash first
    wanted: dict[tuple[int, int], list[int]] = {}
    for _, s, b, r in chosen:
        wanted.setdefault((s, b), []).append(r)
    texts: dict[tuple[int, int, int], str] = {}
    for s, path in enumerate(shard_paths):
        with pa.memory_map(path) as src:
            reader = pa.ipc.open_file(src)
            for b in range(reader.num_record_batches):
                rows = wanted.get((s, b))
                if not rows:
                    continue
                column = reader.get_batch(b).column(text_column)
                for r in rows:
                    t = column[r].as_py() or ""
                    texts[(s, b, r)] = t[:max_doc_chars] if max_doc_chars else t
    return [texts[(s, b, r)] for _, s, b, r in chosen]


def train_bpe(texts: list[str], vocab_size: int, special_tokens: list[str], min_frequency: int = 2):
    """A byte-level BPE (GPT-2 pattern, no prefix space) trained on ``texts``.

    The special tokens take ids 0..k-1, the 256 bytes the next ids, the merges the rest in the order
    they were learnt, which is what lets tiktoken encode with it exactly.
    """
    from tokenizers import pre_tokenizers, trainers

    tok = _byte_level_tokenizer({}, [])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    log.info("trained a byte-level BPE: %d entries on %d documents", tok.get_vocab_size(), len(texts))
    return tok
