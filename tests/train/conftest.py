"""Fixtures of the post-training tests: a small real tokenizer with smelter's chat special tokens."""

from __future__ import annotations

import pytest

from tests.conftest import CORPUS


def corpus_sample(n: int = 200, chars: int = 1500) -> list[str]:
    """``n`` passages of real text: consecutive ``chars``-character slices from the middle of the
    Gutenberg books (past their licence headers), the same every run."""
    books = sorted((CORPUS / "books").glob("*.txt"))
    per_book = -(-n // len(books))
    texts: list[str] = []
    for path in books:
        text = path.read_text(encoding="utf-8", errors="replace")
        start = len(text) // 3
        texts += [text[start + i * chars: start + (i + 1) * chars] for i in range(per_book)]
    return texts[:n]


@pytest.fixture(scope="session")
def chat_tokenizer(tmp_path_factory) -> str:
    """Path of a byte-level BPE tokenizer.json (vocab 1024, tokenizer.bpe.DEFAULT_SPECIAL_TOKENS) trained
    with tokenizer.train.train_bpe on 200 passages of the real books (about a second)."""
    from tokenizer.bpe import DEFAULT_SPECIAL_TOKENS
    from tokenizer.train import train_bpe

    tok = train_bpe(corpus_sample(), 1024, DEFAULT_SPECIAL_TOKENS)
    path = tmp_path_factory.mktemp("chat-tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return str(path)
