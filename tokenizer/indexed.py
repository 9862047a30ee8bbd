"""Megatron-core's indexed dataset format (``.bin`` + ``.idx``): a streaming writer and a memory-mapped
numpy reader.

``PREFIX.bin`` is every sequence's token ids back to back in one dtype. ``PREFIX.idx`` is, little
endian::

    b"MMIDIDX\\x00\\x00"        magic
    uint64  1                  version
    uint8   dtype code         1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16
    uint64  S                  number of sequences
    uint64  D                  number of document indices (documents + 1)
    int32[S]                   tokens per sequence
    int64[S]                   byte offset of each sequence in .bin
    int64[D]                   document boundaries as sequence indices: 0, ..., S

smelter writes one sequence per document (so the document indices are 0..S) and never the multimodal
``sequence_modes`` block. This is what ``megatron.core.datasets.indexed_dataset.IndexedDataset`` reads.
"""

from __future__ import annotations

import hashlib
import os
import struct
import uuid

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
               np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7,
               np.dtype(np.uint16): 8}
CODE_DTYPES = {c: d for d, c in DTYPE_CODES.items()}
#: Megatron's rule: uint16 below this many token ids, int32 otherwise
UINT16_LIMIT = 65500


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < UINT16_LIMIT else np.dtype(np.int32)


class IndexedWriter:
    """Appends documents to ``PREFIX.bin`` as they come; writes ``PREFIX.idx`` on ``close()``.

    Both files are written under temporary names and renamed at the end, so a killed task never leaves
    a torn pair. Only the per-document lengths (one int per document) stay in memory.
    """

    def __init__(self, prefix: str, dtype: np.dtype):
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"unsupported token dtype {self.dtype}")
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        self._tag = uuid.uuid4().hex[:8]
        self._bin_tmp = f"{prefix}.bin.tmp-{self._tag}"
        self._bin = open(self._bin_tmp, "wb")
        self._lengths: list[np.ndarray] = []
        self._sha = hashlib.sha256()
        self.tokens = 0
        self.documents = 0

    def add_documents(self, docs: list[np.ndarray], append: int | None = None) -> None:
        """Append documents (one id array each), in order, with one write; ``append``: a token id put
        after each document (the end-of-document token)."""
        if not docs:
            return
        if append is not None:
            tail = np.array([append], dtype=np.asarray(docs[0]).dtype)
            docs = [part for d in docs for part in (d, tail)]
            lengths = np.fromiter((len(d) + 1 for d in docs[::2]), dtype=np.int64, count=len(docs) // 2)
        else:
            lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        flat = np.concatenate(docs) if len(docs) > 1 else np.asarray(docs[0])
        if flat.size and (int(flat.max()) > np.iinfo(self.dtype).max or int(flat.min()) < 0):
            raise ValueError(f"token id out of range for {self.dtype}")
        data = flat.astype(self.dtype, copy=False).tobytes()
        self._bin.write(data)
        self._sha.update(data)
        self._lengths.append(lengths)
        self.tokens += int(lengths.sum())
        self.documents += len(lengths)

    def close(self) -> tuple[str, str]:
        """Finish both files; return their paths (``bin_sha256``/``idx_sha256`` hold their digests)."""
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        if lengths.size and lengths.max() > np.iinfo(np.int32).max:
            raise ValueError("a document longer than 2^31 tokens")
        pointers = np.zeros(len(lengths), np.int64)
        if len(lengths) > 1:
            np.cumsum(lengths[:-1] * self.dtype.itemsize, out=pointers[1:])
        idx_tmp = f"{self.prefix}.idx.tmp-{self._tag}"
        index = b"".join([MAGIC, struct.pack("<Q", VERSION), struct.pack("<B", DTYPE_CODES[self.dtype]),
                          struct.pack("<Q", len(lengths)), struct.pack("<Q", len(lengths) + 1),
                          lengths.astype("<i4").tobytes(), pointers.astype("<i8").tobytes(),
                          np.arange(len(lengths) + 1, dtype="<i8").tobytes()])
        with open(idx_tmp, "wb") as fh:
            fh.write(index)
        self.bin_sha256 = self._sha.hexdigest()
        self.idx_sha256 = hashlib.sha256(index).hexdigest()
        os.replace(self._bin_tmp, self.prefix + ".bin")
        os.replace(idx_tmp, self.prefix + ".idx")
        return self.prefix + ".bin", self.prefix + ".idx"

    def abort(self) -> None:
        self._bin.close()
        for p in (self._bin_tmp, f"{self.prefix}.idx.tmp-{self._tag}"):
            if os.path.exists(p):
                os.remove(p)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            self.abort()
        return False


class IndexedDataset:
    """A memory-mapped ``PREFIX.bin``/``PREFIX.idx`` pair: ``ds[i]`` is sequence i's ids (a read-only
    numpy view, no copy), ``len(ds)`` the number of sequences.

    This is the reader the trainer uses: ``ds.tokens`` is the whole ``.bin`` as one flat array, and
    ``ds.get(i, offset, length)`` slices inside one sequence without touching the rest.
    """

    def __init__(self, prefix: str):
        if prefix.endswith((".bin", ".idx")):
            prefix = prefix[:-4]
        self.prefix = prefix
        idx_path = prefix + ".idx"
        with open(idx_path, "rb") as fh:
            header = fh.read(len(MAGIC) + 8 + 1 + 8 + 8)
        if len(header) < 34 or header[:9] != MAGIC:
            raise ValueError(f"{idx_path}: not a Megatron indexed-dataset index (bad magic)")
        version, = struct.unpack("<Q", header[9:17])
        if version != VERSION:
            raise ValueError(f"{idx_path}: index version {version}, expected {VERSION}")
        code = header[17]
        if code not in CODE_DTYPES:
            raise ValueError(f"{idx_path}: unknown dtype code {code}")
        self.dtype = CODE_DTYPES[code]
        n_seq, n_doc = struct.unpack("<QQ", header[18:34])
        self._idx = np.memmap(idx_path, mode="r", dtype=np.uint8)
        offset = 34
        self.sequence_lengths = np.frombuffer(self._idx, "<i4", n_seq, offset)
        offset += 4 * n_seq
        self.sequence_pointers = np.frombuffer(self._idx, "<i8", n_seq, offset)
        offset += 8 * n_seq
        self.document_indices = np.frombuffer(self._idx, "<i8", n_doc, offset)
        bin_path = prefix + ".bin"
        size = os.path.getsize(bin_path)
        if size % self.dtype.itemsize:
            raise ValueError(f"{bin_path}: size {size} is not a multiple of {self.dtype}")
        self.tokens = (np.memmap(bin_path, mode="r", dtype=self.dtype) if size
                       else np.zeros(0, self.dtype))
        expected = int(self.sequence_lengths.sum(dtype=np.int64))
        if expected != len(self.tokens):
            raise ValueError(f"{bin_path}: holds {len(self.tokens)} tokens, the index says {expected}")

    def __len__(self) -> int:
        return len(self.sequence_lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        start = int(self.sequence_pointers[i]) // self.dtype.itemsize
        return self.tokens[start:start + int(self.sequence_lengths[i])]

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        seq = self[i]
        return seq[offset:] if length is None else seq[offset:offset + length]

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)


class TokenFiles:
    """A tokenize output folder as the trainer sees it: ``tokens.json`` and a reader per shard.

    ``files.shards`` lists the manifest's shard entries (source, part, documents, tokens, ...);
    ``files.dataset(i)`` opens shard i; ``files.by_source()`` groups the readers per source. The
    tokenizer's hash is checked against ``tokenizer.json`` so a swapped tokenizer is caught early.
    """

    def __init__(self, folder: str, check_tokenizer: bool = True):
        import json

        self.folder = folder
        with open(os.path.join(folder, "tokens.json")) as fh:
            self.manifest = json.load(fh)
        self.tokenizer = self.manifest["tokenizer"]
        self.tokenizer_path = os.path.join(folder, self.tokenizer["path"])
        self.eod_id: int = self.tokenizer["eod_id"]
        self.vocab_size: int = self.tokenizer["vocab_size"]
        self.shards: list[dict] = self.manifest["shards"]
        if check_tokenizer:
            if sha256_file(self.tokenizer_path) != self.tokenizer["sha256"]:
                raise ValueError(f"{self.tokenizer_path}: sha256 differs from tokens.json's")

    def dataset(self, i: int) -> IndexedDataset:
        return IndexedDataset(os.path.join(self.folder, self.shards[i]["bin"]))

    def by_source(self) -> dict[str, list[IndexedDataset]]:
        out: dict[str, list[IndexedDataset]] = {}
        for i, s in enumerate(self.shards):
            out.setdefault(s["source"], []).append(self.dataset(i))
        return out
