"""The Megatron indexed-dataset writer and reader: byte layout, both directions against megatron-core."""

from __future__ import annotations

import glob
import os
import struct
import warnings

import numpy as np
import pytest

from tokenizer.indexed import MAGIC, IndexedDataset, IndexedWriter, token_dtype


def megatron_dataset(prefix: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Transformer Engine and Apex are not installed"
        from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronIndexedDataset
    return MegatronIndexedDataset(prefix)


def random_docs(n: int, high: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 300, n)
    lengths[3] = 0  # an empty document: only its EOD
    return [rng.integers(0, high, k, dtype=np.uint32) for k in lengths]


@pytest.mark.parametrize("vocab", [50263, 100_277])
def test_megatron_reads_what_we_write(tmp_path, vocab):
    docs = random_docs(120, vocab)
    eod = vocab - 1
    prefix = str(tmp_path / "part-00000")
    with IndexedWriter(prefix, token_dtype(vocab)) as w:
        w.add_documents(docs[:50], append=eod)  # batches of different sizes
        w.add_documents(docs[50:51], append=eod)
        w.add_documents(docs[51:], append=eod)
        w.close()
    assert w.documents == 120 and w.tokens == sum(len(d) + 1 for d in docs)
    theirs = megatron_dataset(prefix)
    ours = IndexedDataset(prefix)
    assert len(theirs) == len(ours) == 120
    assert theirs.index.dtype == ours.dtype == (np.uint16 if vocab < 65500 else np.int32)
    assert list(theirs.document_indices) == list(range(121))
    for i, d in enumerate(docs):
        want = [*d.tolist(), eod]
        assert theirs[i].tolist() == want
        assert ours[i].tolist() == want
    assert ours.get(7, 2, 3).tolist() == [*docs[7].tolist(), eod][2:5]
    assert not glob.glob(str(tmp_path / "*.tmp-*"))


def test_we_read_what_megatron_writes(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    docs = random_docs(40, 60000, seed=1)
    prefix = str(tmp_path / "theirs")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for d in docs:
        builder.add_item(torch.from_numpy(d.astype(np.int64)))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    ours = IndexedDataset(prefix)
    assert [ours[i].tolist() for i in range(len(ours))] == [d.tolist() for d in docs]
    # and byte for byte what our writer produces for the same documents
    with IndexedWriter(str(tmp_path / "ours"), np.uint16) as w:
        w.add_documents(docs)
        w.close()
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"ours{ext}").read_bytes() == (tmp_path / f"theirs{ext}").read_bytes()


def test_header_layout(tmp_path):
    prefix = str(tmp_path / "x")
    with IndexedWriter(prefix, np.uint16) as w:
        w.add_documents([np.array([5, 6, 7], np.uint32), np.array([], np.uint32)], append=9)
        w.close()
    raw = (tmp_path / "x.idx").read_bytes()
    assert raw[:9] == MAGIC and struct.unpack("<Q", raw[9:17]) == (1,) and raw[17] == 8  # uint16
    assert struct.unpack("<QQ", raw[18:34]) == (2, 3)
    assert np.frombuffer(raw, "<i4", 2, 34).tolist() == [4, 1]
    assert np.frombuffer(raw, "<i8", 2, 42).tolist() == [0, 8]  # byte offsets
    assert np.frombuffer(raw, "<i8", 3, 58).tolist() == [0, 1, 2]
    assert (tmp_path / "x.bin").read_bytes() == np.array([5, 6, 7, 9, 9], "<u2").tobytes()


def test_dtype_rule_and_errors(tmp_path):
    assert token_dtype(65499) == np.uint16 and token_dtype(65500) == np.int32
    w = IndexedWriter(str(tmp_path / "y"), np.uint16)
    with pytest.raises(ValueError, match="out of range"):
        w.add_documents([np.array([70000], np.uint32)])
    w.abort()
    assert os.listdir(tmp_path) == []  # a failed writer leaves nothing behind
    (tmp_path / "z.idx").write_bytes(b"NOTMAGIC" + bytes(40))
    (tmp_path / "z.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="bad magic"):
        IndexedDataset(str(tmp_path / "z"))
