"""Words as spaCy's English tokenizer splits them, fast enough to run on every document.

The Gopher and FineWeb rules count words, and the reference implementation (datatrove) takes them from
``spacy.blank("en")``: tokens with white space stripped. Going through spaCy's ``Doc`` for every document
costs ~8 ms per 5 KB page, more than all our rules together, so this module reproduces the same tokens
another way:

* spaCy splits the text at white space (``str.isspace``) and tokenizes each non-white chunk on its own
  (prefixes, suffixes, infixes, special cases: nothing looks across the white space), so the words of a
  text are the concatenation of the words of ``text.split()``'s chunks;
* a chunk's tokens are computed once by spaCy itself and cached, so a document costs one dict lookup per
  chunk; web text repeats its chunks (``the``, ``and,``) and the cache hits ~90% of the time;
* each distinct word gets an integer id with its features (length, punctuation-only, has a letter, ...)
  in numpy arrays, so the rules work on arrays of ids instead of lists of strings.

White-space runs other than a single space are tokens of their own in spaCy; the word lists drop them (as
the reference does), but the sentence count of :meth:`Words.sentences` keeps them, because spaCy's
sentencizer sees them.
"""

from __future__ import annotations

import itertools
import re
import string
import sys

import numpy as np
import regex

#: Characters that end a sentence: Unicode's Sentence_Terminal property. FineWeb's line rule asks whether
#: a line ends with one of them.
TERMINAL_PUNCTUATION: frozenset[str] = frozenset(
    chr(c) for c in range(sys.maxunicode + 1) if regex.match(r"\p{Sentence_Terminal}", chr(c))
)

#: What the Gopher rules treat as a symbol: a word made only of these is not counted as a word. The set
#: FineWeb's reference implementation uses: ASCII punctuation, control characters (not tab or newline),
#: sentence terminals, and the quotes, dashes and full-width signs below.
PUNCTUATION_SET: frozenset[str] = frozenset(
    set(string.punctuation)
    | {chr(c) for c in (*range(0, 9), *range(11, 32), *range(127, 160))}
    | TERMINAL_PUNCTUATION
    | set("«´»–—’“”„…∶━►、〈〉《》「」【】％（），１：；～")
)

#: spaCy's sentencizer: a sentence ends after one of these (its default ``punct_chars``).
_SENTENCIZER_PUNCT: frozenset[str] | None = None

_WHITE_RUNS = re.compile(r"(\s+)")
_PLAIN = re.compile(r"([^\W\d_]+)([,;:!?]?)\Z")

# word features, one bit each
F_SYMBOL = 1  # every character in PUNCTUATION_SET (Gopher: not a word)
F_ALPHA = 2  # has a letter (Gopher's alphabetic-word rule)
F_PUNCT = 4  # spaCy's is_punct: every character's Unicode category is P*
F_SENT_END = 8  # the sentencizer's sentence-ending punctuation


def _sentencizer_punct() -> frozenset[str]:
    global _SENTENCIZER_PUNCT
    if _SENTENCIZER_PUNCT is None:
        from spacy.pipeline.sentencizer import Sentencizer

        _SENTENCIZER_PUNCT = frozenset(Sentencizer.default_punct_chars)
    return _SENTENCIZER_PUNCT


def _features(word: str) -> int:
    import unicodedata

    f = 0
    if all(ch in PUNCTUATION_SET for ch in word):
        f |= F_SYMBOL
    if any(ch.isalpha() for ch in word):
        f |= F_ALPHA
    if all(unicodedata.category(ch).startswith("P") for ch in word):
        f |= F_PUNCT
    if word in _sentencizer_punct():
        f |= F_SENT_END
    return f


class Words:
    """spaCy-exact word ids for texts of one language, with a per-process cache of chunks and words.

    Ids are valid until the cache is reset (when it outgrows ``max_chunks``), which only happens at the
    start of a call, so the ids of one text are always consistent.
    """

    def __init__(self, language: str = "en", max_chunks: int = 1_000_000):
        import spacy

        self.language = language
        self.max_chunks = max_chunks
        self._nlp = spacy.blank(language)
        self._tokenizer = self._nlp.tokenizer
        self._specials = frozenset(self._tokenizer.rules)
        self._reset()

    def _reset(self) -> None:
        self._chunks: dict[str, tuple[int, ...]] = {}
        self._ids: dict[str, int] = {}
        self.words: list[str] = []
        self.length = np.zeros(1024, np.int64)
        self.flags = np.zeros(1024, np.uint8)

    def _word(self, w: str) -> int:
        i = self._ids.get(w)
        if i is None:
            i = len(self.words)
            if i == len(self.length):
                self.length = np.concatenate([self.length, np.zeros(i, np.int64)])
                self.flags = np.concatenate([self.flags, np.zeros(i, np.uint8)])
            self._ids[w] = i
            self.words.append(w)
            self.length[i] = len(w)
            self.flags[i] = _features(w)
        return i

    def _chunk(self, chunk: str) -> tuple[int, ...]:
        with self._nlp.memory_zone():  # spaCy's strings for this chunk are freed again
            toks = [t.text.strip() for t in self._tokenizer(chunk)]
        ids = tuple(self._word(t) for t in toks if t)
        self._chunks[chunk] = ids
        return ids

    def _learn(self, chunks: list[str]) -> None:
        """Tokenize unseen chunks with one spaCy call: joined by newlines, each chunk ends at a newline
        token. Plain words skip spaCy altogether."""
        new = []
        for c in dict.fromkeys(chunks):
            if c in self._chunks:
                continue
            # plain words (and plain words before , ; : ! ?) are what spaCy leaves alone unless a
            # special case ("cannot", "gonna") names them
            m = _PLAIN.match(c)
            if m and c not in self._specials and m.group(1) not in self._specials:
                self._chunks[c] = (self._word(m.group(1)), self._word(m.group(2))) if m.group(2) \
                    else (self._word(c),)
            else:
                new.append(c)
        if len(new) < 8:
            for c in new:
                self._chunk(c)
            return
        with self._nlp.memory_zone():
            # a newline between chunks is a token of its own: no special case can span it
            doc = self._tokenizer("\n".join(new))
            pieces: list[list[str]] = [[]]
            for t in doc:
                if t.text == "\n":
                    pieces.append([])
                else:
                    pieces[-1].append(t.text)
        if len(pieces) != len(new) or any("".join(p) != c for p, c in zip(pieces, new, strict=True)):
            for c in new:  # a special case spanned a space: one chunk at a time
                self._chunk(c)
            return
        for c, toks in zip(new, pieces, strict=True):
            self._chunks[c] = tuple(self._word(t) for t in toks)

    def ids(self, text: str) -> np.ndarray:
        """The word ids of ``text`` (int64), in order; white space is not a word."""
        if len(self._chunks) > self.max_chunks:
            self._reset()
        chunks = text.split()
        get = self._chunks.get
        try:
            return np.fromiter(itertools.chain.from_iterable(map(self._chunks.__getitem__, chunks)), np.int64)
        except KeyError:
            self._learn(chunks)
        out: list[int] = []
        extend = out.extend
        for chunk in chunks:
            t = get(chunk)
            extend(t if t is not None else self._chunk(chunk))
        return np.array(out, np.int64)

    def id_of(self, word: str) -> int | None:
        return self._ids.get(word)

    def tokens(self, text: str) -> list[str]:
        """The words themselves (for tests and debugging)."""
        return [self.words[i] for i in self.ids(text)]

    def sentences(self, text: str) -> int:
        """How many sentences spaCy's sentencizer finds in ``text`` (stripped, non-empty).

        The sentencizer starts a sentence at the first token that is neither punctuation nor
        sentence-ending after a sentence-ending token; white-space tokens count as such a token.
        """
        if len(self._chunks) > self.max_chunks:
            self._reset()
        sentences, seen_end = 1, False
        for k, part in enumerate(_WHITE_RUNS.split(text)):
            if k % 2:  # white space: a token unless it is the single space after a token
                if part != " " and seen_end:
                    sentences += 1
                    seen_end = False
                continue
            if not part:
                continue
            t = self._chunks.get(part)
            for i in t if t is not None else self._chunk(part):
                f = self.flags[i]
                if f & F_SENT_END:
                    seen_end = True
                elif seen_end and not f & F_PUNCT:
                    sentences += 1
                    seen_end = False
        return sentences


_instances: dict[str, Words] = {}


def words_for(language: str = "en") -> Words:
    """One shared :class:`Words` per language and process: the cache serves every step."""
    if language not in _instances:
        _instances[language] = Words(language)
    return _instances[language]
