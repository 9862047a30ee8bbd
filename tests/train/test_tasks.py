"""The verifiable task generator (train.tasks): correct answers, wrong answers that are wrong, held-out
splits disjoint by problem, determinism, and files the post-training loaders read without a bad row."""

from __future__ import annotations

import argparse
import json
import os
import re

import pytest

from pipelines.errors import UserError
from train import tasks
from train.chat import ChatTemplate
from train.posttrain_data import load_pairs, load_prompts, load_sft
from train.verifiers import verify

DEMO_TOKENIZER = os.path.join(os.path.dirname(__file__), "..", "..", "out", "mix-tokens", "tokenizer.json")


def solve(task: str, prompt: str) -> str:
    """The answer, worked out independently of the generator from the prompt text."""
    if task == "add":
        a, b = re.fullmatch(r"What is ([\d ]+) \+ ([\d ]+)\?", prompt).groups()
        spaced = " " in a or " " in b
        total = str(int(a.replace(" ", "")) + int(b.replace(" ", "")))
        return " ".join(total) if spaced else total
    words = prompt.split(": ", 1)[1].split()
    return " ".join(words[::-1] if task == "reverse_words" else sorted(words))


@pytest.mark.parametrize("task, options", [
    ("add", {}), ("add", {"min_digits": 2, "max_digits": 4, "spaced": True}),
    ("reverse_words", {}), ("sort_words", {"min_words": 4, "max_words": 4, "words": "common"}),
])
def test_answers_right_and_wrong(task, options):
    t = tasks.make_task(task, **options)
    split = tasks.generate(t, 300, 60, seed=1)
    assert len(split["train"]) == 300 and len(split["heldout"]) == 60
    for p in split["train"] + split["heldout"]:
        assert p.answer == solve(task, p.prompt)
        assert verify(t.verifier, p.answer, p.answer) == 1.0
        assert p.wrong != p.answer and verify(t.verifier, p.wrong, p.answer) == 0.0
        if task == "add":
            digits = [len(x.replace(" ", "")) for x in re.findall(r"[\d ]*\d", p.prompt)]
            assert all(t.min_digits <= d <= t.max_digits for d in digits)
        else:
            words = p.prompt.split(": ", 1)[1].split()
            assert len(set(words)) == len(words) and t.min_words <= len(words) <= t.max_words
            assert set(words) <= set(t.vocab) and set(p.wrong.split()) <= set(t.vocab)
    assert t.verifier == ("exact" if task != "add" or options.get("spaced") else "numeric")


def test_splits_are_disjoint_by_problem_for_any_seed():
    t = tasks.make_task("sort_words", min_words=3, max_words=3)
    a, b = tasks.generate(t, 400, 100, seed=0), tasks.generate(t, 400, 100, seed=7)
    assert [p.prompt for p in a["train"]] != [p.prompt for p in b["train"]]
    held = {p.key for s in (a, b) for p in s["heldout"]}
    train = {p.key for s in (a, b) for p in s["train"]}
    assert not held & train  # the same words in any order never cross splits, whatever the seed
    assert len({p.prompt for p in a["train"]}) == 400
    # add: a + b and b + a are the same problem
    adds = tasks.generate(tasks.make_task("add", max_digits=2), 500, 100, seed=3)
    assert not {p.key for p in adds["heldout"]} & {p.key for p in adds["train"]}
    assert 0.1 < sum(tasks.is_heldout(f"add:{i}+{i}") for i in range(2000)) / 2000 < 0.3


def test_write_task_data_is_deterministic_and_loads_cleanly(tmp_path, chat_tokenizer):
    template = ChatTemplate.from_tokenizer_file(chat_tokenizer)
    info = tasks.write_task_data(str(tmp_path / "a"), "reverse_words", 50, 10, seed=5, max_words=4)
    tasks.write_task_data(str(tmp_path / "b"), "reverse_words", 50, 10, seed=5, max_words=4)
    assert info["counts"] == {"train": 50, "heldout": 10} and info["verifier"] == "exact"
    assert info["options"] == {"min_words": 3, "max_words": 4, "words": "demo"} and info["seed"] == 5
    assert json.load(open(tmp_path / "a" / "tasks.json")) == info
    for split, n in (("train", 50), ("heldout", 10)):
        for name in ("sft", "pairs", "prompts"):
            a = (tmp_path / "a" / split / f"{name}.jsonl").read_text()
            assert a == (tmp_path / "b" / split / f"{name}.jsonl").read_text()
        folder = str(tmp_path / "a" / split)
        sft, r1 = load_sft(f"{folder}/sft.jsonl", template, 128)
        pairs, r2 = load_pairs(f"{folder}/pairs.jsonl", template, 128)
        prompts, r3 = load_prompts(f"{folder}/prompts.jsonl", template, 128)
        for r in (r1, r2, r3):
            assert (r.rows, r.used, r.bad) == (n, n, {})
        for ex in prompts:
            assert ex.verifier == "exact" and ex.answer == solve("reverse_words", ex.prompt)
    first = json.loads((tmp_path / "a" / "train" / "sft.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]


def test_bad_task_requests_are_user_errors():
    with pytest.raises(UserError, match="unknown task 'multiply'; known: add, reverse_words, sort_words"):
        tasks.make_task("multiply")
    with pytest.raises(UserError, match="unexpected keyword argument 'max_words'"):
        tasks.make_task("add", max_words=3)
    with pytest.raises(UserError, match="min_digits <= max_digits"):
        tasks.make_task("add", min_digits=3, max_digits=2)
    with pytest.raises(UserError, match="words must be one of demo, common"):
        tasks.make_task("reverse_words", words="klingon")
    with pytest.raises(UserError, match="found only .* distinct problems"):
        tasks.generate(tasks.make_task("add", max_digits=1), 100, 10, seed=0)


def test_cli(tmp_path, capsys):
    p = argparse.ArgumentParser()
    tasks.add_arguments(p)
    out = str(tmp_path / "add")
    assert tasks.main(p.parse_args(["--task", "add", "--train", "20", "--heldout", "5", "--max-digits", "2",
                                    "--spaced", "--out", out])) == 0
    assert "20 train and 5 held-out problems (verifier exact)" in capsys.readouterr().out
    row = json.loads(open(f"{out}/heldout/prompts.jsonl").readline())
    assert row["verifier"] == "exact" and re.fullmatch(r"\d( \d)*", row["answer"])
    with pytest.raises(UserError, match="--task add takes no --words"):
        tasks.main(p.parse_args(["--task", "add", "--words", "common", "--out", out]))


@pytest.mark.skipif(not os.path.isfile(DEMO_TOKENIZER), reason="out/mix-tokens/tokenizer.json: run `make demo`")
def test_demo_words_are_single_tokens_of_the_demo_tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(DEMO_TOKENIZER)
    for w in tasks.DEMO_WORDS:
        assert len(tok.encode(w, add_special_tokens=False).ids) == 1, w
        assert len(tok.encode(" " + w, add_special_tokens=False).ids) == 1, w
    assert len(set(tasks.DEMO_WORDS)) == len(tasks.DEMO_WORDS) >= 100
    assert len(set(tasks.COMMON_WORDS)) == len(tasks.COMMON_WORDS) >= 150
