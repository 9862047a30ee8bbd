"""Verifiable tasks with a held-out split, so every post-training stage (SFT, DPO, reward model, GRPO) can be
demonstrated and tested offline: ``smelter tasks --task reverse_words --train 2000 --heldout 200 --out DIR``
(also ``python -m train.tasks ...``).

Tasks (each with the verifier its answers are checked with):

* ``add`` (numeric): ``What is 347 + 85?`` -> ``432``. Options: ``min_digits`` (1), ``max_digits`` (3),
  ``spaced`` (false; true writes every digit as its own word, ``3 4 7``, which a byte-level BPE cannot
  merge into arbitrary chunks; the verifier is then ``exact``).
* ``reverse_words`` (exact): ``Reverse the order of these words: river cat moon`` -> ``moon cat river``.
* ``sort_words`` (exact): ``Sort these words alphabetically: river cat moon`` -> ``cat moon river``.
  Word options: ``min_words`` (3), ``max_words`` (6), ``words`` (``demo``: 121 common English words that
  are single tokens of the demo tokenizer both with and without a leading space, so a 2.9M-parameter
  model sees each word as one symbol; ``common``: 190 common English words, for any tokenizer).

The split is a property of the problem, not of the draw: a problem is held out when a hash of its
canonical form (the sorted operands for ``add``, so ``a + b`` and ``b + a`` go together; the set of
words for the word tasks, so no held-out list shares its words with a training list in any order) falls
in the held-out 20%. Any seed and any counts keep the two splits disjoint. Problems are drawn from the
seed's random stream, skipping repeats, until both splits are full.

Every problem also has a plausible wrong answer (never equal to the right one) for preference pairs: a
sum off by a little or with one digit changed; the words in their given order, another order, or with
one word replaced.

Output: ``DIR/{train,heldout}/sft.jsonl`` (``{"messages": [user, assistant]}``), ``pairs.jsonl``
(``{"prompt", "chosen", "rejected"}``), ``prompts.jsonl`` (``{"prompt", "answer", "verifier"}``), and
``DIR/tasks.json`` (task, options, seed, counts, verifier, held-out fraction).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass

from pipelines.errors import UserError

#: the share of the problem space that is held out (by hash of the canonical problem)
HELDOUT_FRACTION = 0.2

#: common English words; each is one token of out/mix-tokens/tokenizer.json (the demo's BPE, vocab 16384)
#: both as ``word`` and as `` word`` (checked when the list was made; tests/train/test_tasks.py re-checks
#: when that tokenizer exists)
DEMO_WORDS = """
river house water light stone green table window garden bread paper money horse night story dream chair
glass cloud field forest bridge train world heart happy little small large great black white yellow father
mother sister brother friend doctor king school street city village storm rain fire earth wood iron gold
dog cat bird fish bear wolf cake rose tree root seed wind sun moon star sea hill road door wall floor bed
lamp clock book letter pen card ship boat car ring bell voice word name face hand head eye ear mouth hair
foot arm leg blue red brown dark bright cold warm hot soft hard quick slow quiet early late young old new
morning evening spring silence pocket turtle
""".split()

#: a broader list of common English words, for tokenizers other than the demo's
COMMON_WORDS = DEMO_WORDS + """
apple winter summer music paint plant grass ocean island orange purple silver golden teacher farmer queen
prince castle church market mountain valley desert snow metal mouse lion tiger sheep cow pig duck goose
chicken egg milk cheese butter sugar salt honey fruit lemon cherry grape peach flower leaf branch sky lake
roof wheel drum song nose loud autumn shadow journey battle candle mirror button basket ribbon kitchen
captain soldier sailor rabbit monkey spider dragon giant
""".split()

WORD_LISTS = {"demo": DEMO_WORDS, "common": COMMON_WORDS}


def _hash01(text: str) -> float:
    """A stable number in [0, 1) from text (BLAKE2b), the same on every machine and Python."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


@dataclass
class Problem:
    prompt: str
    answer: str
    wrong: str
    key: str  # canonical form: problems with the same key always fall in the same split


class Task:
    """A task: draws problems from a random stream; ``verifier`` checks answers."""

    name = ""
    verifier = ""

    def options(self) -> dict:
        raise NotImplementedError

    def draw(self, rng: random.Random) -> Problem:
        raise NotImplementedError


class Add(Task):
    name = "add"

    def __init__(self, min_digits: int = 1, max_digits: int = 3, spaced: bool = False):
        if not 1 <= min_digits <= max_digits <= 30:
            raise UserError(f"add: need 1 <= min_digits <= max_digits <= 30, got {min_digits} and {max_digits}")
        self.min_digits, self.max_digits, self.spaced = min_digits, max_digits, bool(spaced)
        self.verifier = "exact" if self.spaced else "numeric"

    def options(self) -> dict:
        return {"min_digits": self.min_digits, "max_digits": self.max_digits, "spaced": self.spaced}

    def _number(self, rng: random.Random) -> int:
        digits = rng.randint(self.min_digits, self.max_digits)
        return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)

    def _text(self, n: int) -> str:
        return " ".join(str(n)) if self.spaced else str(n)

    @staticmethod
    def wrong_sum(right: int, rng: random.Random) -> int:
        """A near miss: off by 1-10 (half the time), else one digit changed; never ``right``, never < 0."""
        while True:
            if rng.random() < 0.5:
                wrong = right + rng.choice([-1, 1]) * rng.randint(1, 10)
            else:
                digits = list(str(right))
                i = rng.randrange(len(digits))
                choices = [d for d in "0123456789" if d != digits[i] and not (d == "0" and i == 0 and len(digits) > 1)]
                digits[i] = rng.choice(choices)
                wrong = int("".join(digits))
            if wrong != right and wrong >= 0:
                return wrong

    def draw(self, rng: random.Random) -> Problem:
        a, b = self._number(rng), self._number(rng)
        key = f"add:{min(a, b)}+{max(a, b)}"
        wrong = self.wrong_sum(a + b, random.Random(f"{key}:wrong"))
        return Problem(f"What is {self._text(a)} + {self._text(b)}?", self._text(a + b), self._text(wrong), key)


class WordTask(Task):
    """A task over a list of distinct words; subclasses say what to do with them."""

    verifier = "exact"
    instruction = ""

    def __init__(self, min_words: int = 3, max_words: int = 6, words: str = "demo"):
        if words not in WORD_LISTS:
            raise UserError(f"{self.name}: words must be one of {', '.join(WORD_LISTS)}, not {words!r}")
        if not 2 <= min_words <= max_words <= 20:
            raise UserError(f"{self.name}: need 2 <= min_words <= max_words <= 20, got {min_words} and {max_words}")
        self.min_words, self.max_words, self.words = min_words, max_words, words
        self.vocab = WORD_LISTS[words]

    def options(self) -> dict:
        return {"min_words": self.min_words, "max_words": self.max_words, "words": self.words}

    def transform(self, words: list[str]) -> list[str]:
        raise NotImplementedError

    def draw(self, rng: random.Random) -> Problem:
        words = rng.sample(self.vocab, rng.randint(self.min_words, self.max_words))
        key = f"{self.name}:{' '.join(sorted(words))}"
        right = self.transform(words)
        wrong = self.wrong_words(words, right, random.Random(f"{key}:{' '.join(words)}:wrong"))
        return Problem(f"{self.instruction}: {' '.join(words)}", " ".join(right), " ".join(wrong), key)

    def wrong_words(self, words: list[str], right: list[str], rng: random.Random) -> list[str]:
        """A plausible mistake: the words as given, another order, or one word replaced by a new one."""
        while True:
            kind = rng.choice(["given", "shuffle", "replace"])
            if kind == "given":
                wrong = list(words)
            elif kind == "shuffle":
                wrong = list(right)
                rng.shuffle(wrong)
            else:
                wrong = list(right)
                wrong[rng.randrange(len(wrong))] = rng.choice([w for w in self.vocab if w not in words])
            if wrong != right:
                return wrong


class ReverseWords(WordTask):
    name = "reverse_words"
    instruction = "Reverse the order of these words"

    def transform(self, words: list[str]) -> list[str]:
        return words[::-1]


class SortWords(WordTask):
    name = "sort_words"
    instruction = "Sort these words alphabetically"

    def transform(self, words: list[str]) -> list[str]:
        return sorted(words)


TASKS = {t.name: t for t in (Add, ReverseWords, SortWords)}


def make_task(name: str, **options) -> Task:
    """The task called ``name`` with its options; unknown names and options are UserErrors."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    try:
        return TASKS[name](**options)
    except TypeError as e:
        raise UserError(f"{name}: {e}") from None


def is_heldout(key: str) -> bool:
    return _hash01(key) < HELDOUT_FRACTION


def generate(task: Task, n_train: int, n_heldout: int, seed: int) -> dict[str, list[Problem]]:
    """``{"train": [...], "heldout": [...]}``: distinct prompts, each split only from its side of the hash.

    Deterministic from ``seed``. UserError when the problem space is too small for the counts."""
    if n_train < 0 or n_heldout < 0:
        raise UserError("the train and held-out counts must be >= 0")
    rng = random.Random(f"{task.name}:{seed}")
    want = {"train": n_train, "heldout": n_heldout}
    out: dict[str, list[Problem]] = {"train": [], "heldout": []}
    seen: set[str] = set()
    budget = 50 * (n_train + n_heldout) + 10_000
    for _ in range(budget):
        if all(len(out[s]) >= want[s] for s in out):
            break
        p = task.draw(rng)
        split = "heldout" if is_heldout(p.key) else "train"
        if p.prompt in seen or len(out[split]) >= want[split]:
            continue
        seen.add(p.prompt)
        out[split].append(p)
    else:
        if not all(len(out[s]) >= want[s] for s in out):
            raise UserError(f"{task.name} {task.options()}: found only {len(out['train'])} train and "
                            f"{len(out['heldout'])} held-out distinct problems in {budget} draws; ask for fewer "
                            "or widen the options")
    return out


def rows_of(problem: Problem, verifier: str) -> dict[str, dict]:
    """The problem as a row of each output file."""
    return {
        "sft": {"messages": [{"role": "user", "content": problem.prompt},
                             {"role": "assistant", "content": problem.answer}]},
        "pairs": {"prompt": problem.prompt, "chosen": problem.answer, "rejected": problem.wrong},
        "prompts": {"prompt": problem.prompt, "answer": problem.answer, "verifier": verifier},
    }


def write_task_data(out_dir: str, task: str, n_train: int, n_heldout: int, seed: int = 0, **task_options) -> dict:
    """Write ``out_dir/{train,heldout}/{sft,pairs,prompts}.jsonl`` and ``out_dir/tasks.json``; -> its content."""
    t = make_task(task, **task_options)
    problems = generate(t, n_train, n_heldout, seed)
    for split, items in problems.items():
        folder = os.path.join(out_dir, split)
        os.makedirs(folder, exist_ok=True)
        handles = {k: open(os.path.join(folder, f"{k}.jsonl"), "w", encoding="utf-8")
                   for k in ("sft", "pairs", "prompts")}
        try:
            for p in items:
                for k, row in rows_of(p, t.verifier).items():
                    handles[k].write(json.dumps(row, ensure_ascii=False) + "\n")
        finally:
            for fh in handles.values():
                fh.close()
    info = {"task": t.name, "options": t.options(), "seed": seed, "verifier": t.verifier,
            "counts": {s: len(v) for s, v in problems.items()}, "heldout_fraction": HELDOUT_FRACTION,
            "files": {s: {k: f"{s}/{k}.jsonl" for k in ("sft", "pairs", "prompts")} for s in problems},
            "example": rows_of(problems["train"][0], t.verifier)["prompts"] if problems["train"] else None}
    with open(os.path.join(out_dir, "tasks.json"), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
    return info


# ---------------------------------------------------------------------------------------------------
# command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="which task")
    p.add_argument("--train", type=int, default=2000, metavar="N", help="training problems (default 2000)")
    p.add_argument("--heldout", type=int, default=200, metavar="N", help="held-out problems (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--min-digits", type=int, help="add: fewest digits of an operand (default 1)")
    p.add_argument("--max-digits", type=int, help="add: most digits of an operand (default 3)")
    p.add_argument("--spaced", action="store_true", help="add: write digits as separate words (verifier exact)")
    p.add_argument("--min-words", type=int, help="word tasks: fewest words (default 3)")
    p.add_argument("--max-words", type=int, help="word tasks: most words (default 6)")
    p.add_argument("--words", choices=sorted(WORD_LISTS), help="word tasks: word list (default demo)")


def options_of(args: argparse.Namespace) -> dict:
    """The task options the command line set (only those that apply to the task)."""
    per_task = {"add": ("min_digits", "max_digits", "spaced"),
                "reverse_words": ("min_words", "max_words", "words"),
                "sort_words": ("min_words", "max_words", "words")}
    given = {k: getattr(args, k) for k in ("min_digits", "max_digits", "min_words", "max_words", "words")
             if getattr(args, k) is not None}
    if args.spaced:
        given["spaced"] = True
    wrong = sorted(set(given) - set(per_task[args.task]))
    if wrong:
        raise UserError(f"--task {args.task} takes no {', '.join('--' + k.replace('_', '-') for k in wrong)}")
    return given


def main(args: argparse.Namespace) -> int:
    info = write_task_data(args.out, args.task, args.train, args.heldout, args.seed, **options_of(args))
    c = info["counts"]
    print(f"{info['task']} {json.dumps(info['options'])}: {c['train']} train and {c['heldout']} held-out problems "
          f"(verifier {info['verifier']}) in {args.out}")
    if info["example"]:
        print(f"  e.g. {info['example']['prompt']!r} -> {info['example']['answer']!r}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m train.tasks", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    try:
        sys.exit(main(ap.parse_args()))
    except UserError as e:
        print(f"smelter tasks: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
