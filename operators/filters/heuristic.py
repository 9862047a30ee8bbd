"""The heuristic quality filters of Gopher, C4 and FineWeb, with their published defaults.

Each rule and default is the one of the recipe's paper as FineWeb's reference implementation (datatrove
0.10.1) applies it, and the rules run in the same order, so a document drops with the same rule there and
here. Words are spaCy's English tokens (see :mod:`operators.filters.words`); what differs is how they are
computed: word ids in numpy arrays instead of lists of strings, n-grams as ids built pairwise, and a rule
is only measured when the earlier rules passed.

``keep_signals: true`` measures every rule of every live document and keeps the measurements as float32
columns (``gopher_rep_*``, ``gopher_*``, ``c4_*``, ``fineweb_*``), so a report can draw their
distributions and a later run can re-threshold without recomputing. The decision stays the first rule
that fails.

Two deliberate departures, both on inputs the reference crashes on or never sees:
* a text with no words drops (``short_doc`` / ``empty``) instead of dividing by zero;
* repeated n-grams (Gopher's ``duplicated_N_n_grams``) compare word sequences; the reference compares the
  words concatenated without a separator, which also equates ("ab", "c") with ("a", "bc").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from operators.base import Params, RowStep, TaskContext, alive, update_batch
from operators.filters.words import F_ALPHA, F_SYMBOL, TERMINAL_PUNCTUATION, words_for

Signals = dict[str, float]


class _QualityStep(RowStep):
    """A filter that measures one document at a time: subclasses implement :meth:`judge`."""

    reads = ("text",)
    #: the signal columns it adds with keep_signals (names without parameters)
    signals: ClassVar[tuple[str, ...]] = ()
    #: whether the step rewrites ``text`` (C4's line removal)
    rewrites_text: ClassVar[bool] = False

    @classmethod
    def signal_names(cls, params: Params) -> tuple[str, ...]:
        return cls.signals

    @classmethod
    def added(cls, params: Params) -> dict[str, pa.DataType]:
        if not getattr(params, "keep_signals", False):
            return {}
        return {name: pa.float32() for name in cls.signal_names(params)}

    def setup(self) -> None:
        self.words = words_for("en")

    def judge(self, text: str, signals: Signals | None) -> tuple[str | None, str | None]:
        """(drop rule or None, new text or None). Fills ``signals`` when it is a dict."""
        raise NotImplementedError

    def __call__(self, batch: pa.RecordBatch, ctx: TaskContext) -> pa.RecordBatch:
        self.ensure_setup()
        keep_signals = getattr(self.params, "keep_signals", False)
        names = self.signal_names(self.params) if keep_signals else ()
        texts = batch.column("text").to_pylist()
        live = alive(batch)
        reasons: list[str | None] = [None] * batch.num_rows
        new_texts = list(texts) if self.rewrites_text else None
        columns: dict[str, list[float | None]] = {n: [None] * batch.num_rows for n in names}
        for i, (text, ok) in enumerate(zip(texts, live, strict=True)):
            if not ok:
                continue
            signals: Signals | None = {} if keep_signals else None
            reason, rewritten = self.judge(text or "", signals)
            reasons[i] = reason
            if rewritten is not None and new_texts is not None:
                new_texts[i] = rewritten
            if signals:
                for n, v in signals.items():
                    columns[n][i] = v
        set_columns: dict[str, pa.Array] = {n: pa.array(v, pa.float32()) for n, v in columns.items()}
        if new_texts is not None:
            set_columns["text"] = pa.array(new_texts, pa.string())
        return update_batch(batch, self.name, set_columns=set_columns, reasons=reasons)


def _run_rules(rules: list[tuple[str, Callable[[], float], Callable[[float], bool]]],
               signals: Signals | None) -> str | None:
    """Measure rules in order; the first failing one is the reason. With ``signals``, measure all."""
    reason = None
    for name, measure, fails in rules:
        value = measure()
        if signals is not None:
            signals[name] = value
        if reason is None and fails(value):
            reason = name
            if signals is None:
                break
    return reason


def _duplicates(parts: list[str]) -> tuple[int, int]:
    """How many parts repeat an earlier one, and their characters."""
    seen: set[str] = set()
    n = chars = 0
    for p in parts:
        if p in seen:
            n += 1
            chars += len(p)
        else:
            seen.add(p)
    return n, chars


# --------------------------------------------------------------------------------------------------
# Gopher repetition


class GopherRepetitionParams(Params):
    """Gopher (Rae et al. 2021, table A1): fractions above which a document is repetitive."""

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    #: n -> limit on the characters of the most frequent n-gram (times its count) over all characters
    top_n_grams: dict[int, float] = {2: 0.2, 3: 0.18, 4: 0.16}
    #: n -> limit on the characters in repeated n-grams over all characters
    dup_n_grams: dict[int, float] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    keep_signals: bool = False


class _NGrams:
    """Word n-grams of one text as dense ids, built pairwise: (n-1)-gram id x next word id."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray):
        self.n_words = len(ids)
        self.cum = np.concatenate([[0], np.cumsum(lengths)])
        self.words = ids
        self._grams: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def grams(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(id of the n-gram at each position, first position of each id, count of each id)."""
        if n not in self._grams:
            if n == 1:
                key = self.words
            else:
                prev = self.grams(n - 1)[0]
                key = prev[:-1] * (int(self.words.max()) + 1) + self.words[n - 1:]
            _, first, ids, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
            self._grams[n] = (ids.astype(np.int64), first, counts)
        return self._grams[n]

    def top_chars(self, n: int) -> int:
        """Characters of the most frequent n-gram joined with spaces, times its count (the first
        such n-gram in the text when several tie)."""
        _, first, counts = self.grams(n)
        best = counts.max()
        pos = int(first[counts == best].min())
        return int((self.cum[pos + n] - self.cum[pos] + n - 1) * best)

    def repeated_chars(self, n: int) -> int:
        """Characters in n-grams that repeat one seen before, scanning left to right and jumping past
        each repeat (Gopher's rule, so overlapping repeats are not counted twice)."""
        if n > self.n_words:
            return 0
        g, first, counts = self.grams(n)
        if counts.max() == 1:
            return 0
        earlier = np.flatnonzero(first[g] < np.arange(len(g)))
        chars = self.cum[n:] - self.cum[:-n]
        seen: set[int] = set()
        idx = total = 0
        for p in earlier.tolist():
            if p < idx:
                continue
            seen.update(g[idx:p].tolist())  # first occurrences: new by construction
            if g[p] in seen:
                total += int(chars[p])
                idx = p + n
            else:
                seen.add(int(g[p]))
                idx = p + 1
        return total


_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


class GopherRepetition(_QualityStep):
    """Drops documents with repeated lines, paragraphs or n-grams (Gopher's repetition rules).

    Reasons, in the order they are tried: ``dup_para_frac``, ``dup_para_char_frac``, ``dup_line_frac``,
    ``dup_line_char_frac``, ``top_N_gram``, ``duplicated_N_n_grams`` (N from the parameters), ``empty``.
    """

    name = "gopher_repetition"
    Params = GopherRepetitionParams

    @classmethod
    def signal_names(cls, params: GopherRepetitionParams) -> tuple[str, ...]:
        return ("gopher_rep_dup_para_frac", "gopher_rep_dup_para_char_frac", "gopher_rep_dup_line_frac",
                "gopher_rep_dup_line_char_frac",
                *(f"gopher_rep_top_{n}_gram" for n in sorted(params.top_n_grams)),
                *(f"gopher_rep_dup_{n}_gram" for n in sorted(params.dup_n_grams)))

    def judge(self, text: str, signals: Signals | None) -> tuple[str | None, str | None]:
        if not text:
            return "empty", None
        p: GopherRepetitionParams = self.params
        size = len(text)
        state: dict[str, Any] = {}

        def paragraphs() -> tuple[int, int, int]:
            if "para" not in state:
                parts = _PARAGRAPHS.split(text.strip())
                state["para"] = (*_duplicates(parts), len(parts))
            return state["para"]

        def lines() -> tuple[int, int, int]:
            if "line" not in state:
                parts = _LINES.split(text)
                state["line"] = (*_duplicates(parts), len(parts))
            return state["line"]

        def grams() -> _NGrams:
            if "grams" not in state:
                ids = self.words.ids(text)
                state["grams"] = _NGrams(ids, self.words.length[ids])
            return state["grams"]

        def top(n: int) -> float:
            g = grams()
            return g.top_chars(n) / size if g.n_words >= n else 0.0

        def above(limit: float | None) -> Callable[[float], bool]:
            return lambda v: bool(limit) and v > limit

        rules = [
            ("dup_para_frac", lambda: paragraphs()[0] / paragraphs()[2], above(p.dup_para_frac)),
            ("dup_para_char_frac", lambda: paragraphs()[1] / size, above(p.dup_para_char_frac)),
            ("dup_line_frac", lambda: lines()[0] / lines()[2], above(p.dup_line_frac)),
            ("dup_line_char_frac", lambda: lines()[1] / size, above(p.dup_line_char_frac)),
        ]
        rules += [(f"top_{n}_gram", (lambda n=n: top(n)), above(lim)) for n, lim in sorted(p.top_n_grams.items())]
        rules += [(f"duplicated_{n}_n_grams", (lambda n=n: grams().repeated_chars(n) / size), above(lim))
                  for n, lim in sorted(p.dup_n_grams.items())]
        raw: Signals | None = {} if signals is not None else None
        reason = _run_rules(rules, raw)
        if signals is not None and raw is not None:
            signals.update(zip(self.signal_names(p), raw.values(), strict=True))
        return reason, None


# --------------------------------------------------------------------------------------------------
# Gopher quality


class GopherQualityParams(Params):
    """Gopher's quality rules (Rae et al. 2021, section A.1.1) with the paper's limits."""

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    #: at least this fraction of words must contain a letter
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: list[str] = ["the", "be", "to", "of", "and", "that", "have", "with"]
    keep_signals: bool = False


class GopherQuality(_QualityStep):
    """Drops documents that do not read like prose (Gopher's quality rules).

    Words are spaCy tokens; a word made only of punctuation is a symbol, not a word, for the length
    rules. Reasons in order: ``short_doc``, ``long_doc``, ``mean_word_length_low``,
    ``mean_word_length_high``, ``hash_ratio``, ``ellipsis_ratio``, ``bullet_lines``, ``ellipsis_lines``,
    ``alpha_words``, ``stop_words``.
    """

    name = "gopher_quality"
    Params = GopherQualityParams
    signals = ("gopher_words", "gopher_mean_word_length", "gopher_hash_ratio", "gopher_ellipsis_ratio",
               "gopher_bullet_lines", "gopher_ellipsis_lines", "gopher_alpha_words", "gopher_stop_words")

    def judge(self, text: str, signals: Signals | None) -> tuple[str | None, str | None]:
        p: GopherQualityParams = self.params
        W = self.words
        ids = W.ids(text)
        n_words = len(ids)
        flags = W.flags[ids]
        words_mask = (flags & F_SYMBOL) == 0
        n_real = int(words_mask.sum())
        if n_words == 0:
            if signals is not None:
                signals.update(dict.fromkeys(self.signals, 0.0))
            return "short_doc", None
        state: dict[str, Any] = {}

        def lines() -> list[str]:
            if "lines" not in state:
                state["lines"] = text.splitlines() or [""]
            return state["lines"]

        def mean_len() -> float:
            return float(W.length[ids[words_mask]].mean()) if n_real else float("nan")

        def stop_words() -> float:
            present = {W.id_of(w) for w in p.stop_words} - {None}
            return float(len(present.intersection(ids.tolist()))) if present else 0.0

        def below(limit: float | None) -> Callable[[float], bool]:
            return lambda v: bool(limit) and v < limit

        def above(limit: float | None) -> Callable[[float], bool]:
            return lambda v: bool(limit) and v > limit

        rules = [
            ("short_doc", lambda: float(n_real), below(p.min_doc_words)),
            ("long_doc", lambda: float(n_real), above(p.max_doc_words)),
            ("mean_word_length_low", mean_len, below(p.min_avg_word_length)),
            ("mean_word_length_high", mean_len, above(p.max_avg_word_length)),
            ("hash_ratio", lambda: text.count("#") / n_words, above(p.max_symbol_word_ratio)),
            ("ellipsis_ratio", lambda: (text.count("...") + text.count("…")) / n_words,
             above(p.max_symbol_word_ratio)),
            ("bullet_lines", lambda: sum(s.lstrip().startswith(("•", "-")) for s in lines()) / len(lines()),
             above(p.max_bullet_lines_ratio)),
            ("ellipsis_lines", lambda: sum(s.rstrip().endswith(("...", "…")) for s in lines()) / len(lines()),
             above(p.max_ellipsis_lines_ratio)),
            ("alpha_words", lambda: float(((flags & F_ALPHA) != 0).sum()) / n_words,
             below(p.min_alpha_words_ratio)),
            ("stop_words", stop_words, below(p.min_stop_words)),
        ]
        raw: Signals | None = {} if signals is not None else None
        reason = _run_rules(rules, raw)
        if signals is not None and raw is not None:
            signals.update({
                "gopher_words": raw["short_doc"], "gopher_mean_word_length": raw["mean_word_length_low"],
                "gopher_hash_ratio": raw["hash_ratio"], "gopher_ellipsis_ratio": raw["ellipsis_ratio"],
                "gopher_bullet_lines": raw["bullet_lines"], "gopher_ellipsis_lines": raw["ellipsis_lines"],
                "gopher_alpha_words": raw["alpha_words"], "gopher_stop_words": raw["stop_words"],
            })
        return reason, None


# --------------------------------------------------------------------------------------------------
# C4


_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_C4_END = (".", "?", "!", '"', "'")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4QualityParams(Params):
    """C4's rules (Raffel et al. 2020, section 2.2, and its reference code's extra line rules)."""

    remove_citations: bool = True
    #: keep only lines ending in . ? ! " ' (and not in an ellipsis)
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5  # -1: off
    min_words_per_line: int = 3  # -1: off
    max_word_length: int = 1000  # -1: off
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    keep_signals: bool = False


class C4Quality(_QualityStep):
    """C4's line removals (they rewrite ``text``) and document rules (they drop).

    Lines go when they hold a word over ``max_word_length`` characters, lack terminal punctuation, have
    fewer than ``min_words_per_line`` words, mention javascript, or name a cookie / terms-of-use policy;
    Wikipedia-style citations are cut from the lines kept. Reasons: ``lorem_ipsum``, ``curly_bracket``
    (a kept line has one), ``too_few_sentences`` (spaCy's sentencizer over the kept lines). Signals:
    ``c4_sentences``, ``c4_lines_removed`` (fraction of lines).
    """

    name = "c4_quality"
    Params = C4QualityParams
    signals = ("c4_sentences", "c4_lines_removed")
    rewrites_text = True

    def judge(self, text: str, signals: Signals | None) -> tuple[str | None, str | None]:
        p: C4QualityParams = self.params
        lines = text.splitlines()
        kept: list[str] = []
        reason = None
        for line in lines:
            line = line.strip()
            words = line.split()
            if p.max_word_length != -1 and any(len(w) > p.max_word_length for w in words):
                continue
            if p.remove_citations:
                line = _CITATION.sub("", line)
            if p.filter_no_terminal_punct and (not line.endswith(_C4_END) or line.endswith("...")):
                continue
            if len(words) < p.min_words_per_line:
                continue
            lower = line.lower()
            if p.filter_lorem_ipsum and "lorem ipsum" in lower:
                reason = "lorem_ipsum"
                break
            if p.filter_javascript and "javascript" in lower:
                continue
            if p.filter_curly_bracket and "{" in line:
                reason = "curly_bracket"
                break
            if p.filter_policy and any(s in lower for s in _POLICY):
                continue
            kept.append(line)
        if signals is not None:
            signals["c4_lines_removed"] = 1.0 - len(kept) / len(lines) if lines else 0.0
            signals["c4_sentences"] = float(self._sentences(kept)) if reason is None else float("nan")
        if reason is not None:
            return reason, None
        if p.min_num_sentences != -1 and len(kept) < p.min_num_sentences:
            # every kept line holds at least one sentence: only short texts need counting
            if self._sentences(kept) < p.min_num_sentences:
                return "too_few_sentences", None
        return None, "\n".join(kept).strip()

    def _sentences(self, lines: list[str]) -> int:
        return sum(self.words.sentences(line) for line in lines)


# --------------------------------------------------------------------------------------------------
# FineWeb


class FineWebQualityParams(Params):
    """FineWeb's own rules (Penedo et al. 2024), thresholds of the FineWeb recipe."""

    #: at least this fraction of lines must end in terminal punctuation
    line_punct_thr: float = 0.12
    #: do not apply the rule above to documents where no line ends in punctuation
    line_punct_exclude_zero: bool = False
    #: characters that end a line; default: Unicode's sentence terminals
    stop_chars: list[str] | None = None
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    keep_signals: bool = False


class FineWebQuality(_QualityStep):
    """Drops list-like, line-repetitive and unpunctuated documents (FineWeb's rules).

    Reasons in order: ``empty``, ``line_punct_ratio``, ``short_line_ratio``, ``char_dup_ratio``,
    ``list_ratio`` (newlines per word).
    """

    name = "fineweb_quality"
    Params = FineWebQualityParams
    signals = ("fineweb_line_punct_ratio", "fineweb_short_line_ratio", "fineweb_char_dup_ratio",
               "fineweb_list_ratio")

    def setup(self) -> None:
        super().setup()
        stop = self.params.stop_chars
        self.stop_chars = tuple(stop) if stop is not None else tuple(sorted(TERMINAL_PUNCTUATION))

    def judge(self, text: str, signals: Signals | None) -> tuple[str | None, str | None]:
        p: FineWebQualityParams = self.params
        lines = [line for line in text.split("\n") if line.strip() != ""]
        if not lines:
            if signals is not None:
                signals.update(dict.fromkeys(self.signals, float("nan")))
            return "empty", None
        n = len(lines)

        def punct_fails(v: float) -> bool:
            return v < p.line_punct_thr and not (v == 0 and p.line_punct_exclude_zero)

        def list_ratio() -> float:
            words = len(self.words.ids(text))
            return text.count("\n") / words if words else float("inf")

        rules = [
            ("line_punct_ratio", lambda: sum(line.endswith(self.stop_chars) for line in lines) / n, punct_fails),
            ("short_line_ratio", lambda: sum(len(line) <= p.short_line_length for line in lines) / n,
             lambda v: v > p.short_line_thr),
            ("char_dup_ratio", lambda: _duplicates(lines)[1] / (len(text) - text.count("\n")),
             lambda v: v > p.char_duplicates_ratio),
            ("list_ratio", list_ratio, lambda v: v > p.new_line_ratio),
        ]
        raw: Signals | None = {} if signals is not None else None
        reason = _run_rules(rules, raw)
        if signals is not None and raw is not None:
            signals.update(zip(self.signals, raw.values(), strict=True))
        return reason, None
