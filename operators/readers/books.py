"""``text_files``: plain-text books (Project Gutenberg and the like), one file per book.

Decoding (``encoding: auto``): a byte-order mark decides first (UTF-8, UTF-16); then UTF-8 when the
bytes decode strictly. Otherwise the file is taken as Windows-1252, the superset of ISO-8859-1 that old
Gutenberg files labelled "ISO-8859-1" often really are (their curly quotes and dashes are cp1252 bytes
0x80-0x9F, C1 control characters in Latin-1); the five bytes cp1252 leaves undefined decode as Latin-1.
A file that is UTF-8 except for a few damaged bytes (valid multi-byte sequences outnumber the bad bytes
ten to one) stays UTF-8, the bad bytes becoming U+FFFD (counted). ``encoding: <codec>`` forces a codec,
strictly. Line ends become ``\\n``.

``strip: gutenberg`` removes Project Gutenberg's header, footer and licence:

* the body starts after the last start marker before the footer: ``*** START OF THE/THIS PROJECT
  GUTENBERG EBOOK ... ***`` (with or without the asterisks or spaces, wrapped over two lines or not),
  or an old file's end of the header licence, ``*END*THE SMALL PRINT! ...`` or the World Library
  Shakespeare's ``SMALL PRINT! FOR __ COMPLETE SHAKESPEARE``;
* it ends before the first end marker after that: ``*** END OF THE/THIS PROJECT GUTENBERG ...``,
  ``End of (the) Project Gutenberg('s) ...``, ``End of this Etext of ...`` (the footer licence follows);
* production notes at the top of the body go too ("Produced by", "E-text prepared by", "Transcribed
  from ... by", a paragraph naming Project Gutenberg, pgdp.net, pglaf.org ...), and the World Library
  copyright notice ``<<THIS ELECTRONIC VERSION ... MEMBERSHIP.>>`` that Shakespeare files repeat
  between acts.

A file with no marker at all is kept whole (counted as ``gutenberg_no_markers``); one with only one kind
is cut on that side (``gutenberg_no_start_marker`` / ``gutenberg_no_end_marker``).

``max_chars`` splits a long book into documents of at most that many characters: at the last blank line
that fits, else the last line end, else the last sentence end, else the last space, else hard. Each
piece is a row with ``chunk`` = 0, 1, ... (always present; 0 for a whole book).

Rows: ``id`` (hash of source, file name and chunk), ``path``, ``title`` (the Gutenberg header's
``Title:``, else the file name without extension), ``text``, ``chunk``. Files that give no document go to
the ledger with ``drop_reason``: ``empty`` (nothing left after decoding and stripping), ``binary`` (NUL
bytes and no UTF-16 mark), ``undecodable`` (not in the forced ``encoding``), ``too_short`` (under
``min_chars`` after stripping). A file that cannot be opened is an error entry.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator
from typing import Literal

import pyarrow as pa
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from operators.base import DROP_DETAIL, DROP_REASON, Params, Reader, TaskContext, doc_id
from operators.readers.files import list_files

SCHEMA = pa.schema([("id", pa.string()), ("path", pa.string()), ("title", pa.string()), ("text", pa.string()),
                    ("chunk", pa.int32()), (DROP_REASON, pa.string()), (DROP_DETAIL, pa.string())])


class TextFilesParams(Params):
    #: globs of text files (``**`` allowed)
    paths: str | list[str]
    #: ``gutenberg``: remove Project Gutenberg's header, footer and licence
    strip: Literal["none", "gutenberg"] = "none"
    #: ``auto`` (UTF-8, else cp1252/Latin-1; BOMs honoured) or a Python codec name, applied strictly
    encoding: str = "auto"
    #: split a book into documents of at most this many characters at paragraph boundaries
    max_chars: int | None = Field(default=None, ge=200)
    #: a book shorter than this after stripping goes to the ledger (``too_short``)
    min_chars: int = Field(default=1, ge=1)

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, v: str) -> str:
        if v != "auto":
            try:
                codecs.lookup(v)
            except LookupError:
                raise PydanticCustomError("codec", f"unknown text encoding '{v}' (use auto or a codec "
                                                   "name such as utf-8, cp1252, latin-1)") from None
        return v


# --------------------------------------------------------------------------------------------------
# Decoding


def _latin1_fallback(err: UnicodeDecodeError) -> tuple[str, int]:
    """cp1252 leaves 0x81, 0x8D, 0x8F, 0x90, 0x9D undefined: read those bytes as Latin-1."""
    return err.object[err.start:err.end].decode("latin-1"), err.end


codecs.register_error("smelter-latin1", _latin1_fallback)

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# a valid UTF-8 multi-byte sequence (lead byte + continuation bytes)
_UTF8_MULTI = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


class DecodeError(ValueError):
    """The bytes are not text in the asked encoding (or not text at all)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def decode(raw: bytes, encoding: str = "auto") -> tuple[str, str]:
    """(text with ``\\n`` line ends, the encoding used); :class:`DecodeError` when it is not text."""
    if encoding != "auto":
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as e:
            raise DecodeError("undecodable", f"not {encoding}: byte {e.start}: {e.reason}") from None
        return _newlines(text.lstrip("\ufeff")), encoding
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                return _newlines(raw.decode(codec)), codec
            except UnicodeDecodeError as e:
                raise DecodeError("undecodable", f"starts with a {codec} mark but byte {e.start}: {e.reason}"
                                  ) from None
    if b"\x00" in raw[:65536]:
        raise DecodeError("binary", "NUL bytes and no UTF-16/32 byte-order mark: not a text file")
    try:
        return _newlines(raw.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    good = len(_UTF8_MULTI.findall(raw))
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.count("\xef\xbf\xbd".encode("latin-1"))
    if good >= 10 * max(bad, 1):
        return _newlines(text), "utf-8-damaged"
    return _newlines(raw.decode("cp1252", errors="smelter-latin1")), "cp1252"


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --------------------------------------------------------------------------------------------------
# Project Gutenberg's header, footer and licence

_START = re.compile(
    r"^[ \t]*\**[ \t]*START[ \t]+OF[ \t]+(THE|THIS)[ \t]+PROJECT[ \t]+GUTENBERG"
    r"|^[ \t]*\*+[ \t]*END\*?[ \t]*THE[ \t]+SMALL[ \t]+PRINT"
    r"|^[ \t]*\*+[ \t]*SMALL[ \t]+PRINT![ \t]+FOR[ \t]+_+[ \t]+COMPLETE[ \t]+SHAKESPEARE",
    re.IGNORECASE | re.MULTILINE)
_END = re.compile(
    r"^[ \t]*\**[ \t]*END[ \t]+OF[ \t]+(THE|THIS)[ \t]+PROJECT[ \t]+GUTENBERG"
    r"|^[ \t]*End[ \t]+of[ \t]+(the[ \t]+|this[ \t]+)?Project[ \t]+Gutenberg"
    r"|^[ \t]*End[ \t]+of[ \t]+(the[ \t]+|this[ \t]+)E-?text[ \t]+of\b"
    r"|^[ \t]*Ende?[ \t]+(dieses|diese|des)[ \t]+Proje[ck]t[ \t]+Gutenberg",
    re.IGNORECASE | re.MULTILINE)
# the World Library copyright notice, repeated inside old Shakespeare files
_WORLD_LIBRARY = re.compile(r"<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM\s+SHAKESPEARE"
                            r"[^>]{0,1000}?>>[ \t]*\n?", re.IGNORECASE)
# production notes: a paragraph at the top of the body that starts like this ...
_CREDIT_START = re.compile(
    r"^\s*(\[?\s*)?(produced[ \t]+by|e-?text[ \t]+(was[ \t]+)?(prepared|produced)[ \t]+by|"
    r"transcribed[ \t]+(from|by)|credits?\s*$|html[ \t]+version[ \t]+by|"
    r"note:[ \t]+(project[ \t]+gutenberg|images[ \t]+of[ \t]+the[ \t]+original)|"
    r"this[ \t]+(e-?text|e-?book|file)[ \t]+was[ \t]+(produced|prepared|made)|"
    r"transcriber'?s?[ \t]+note:[ \t]+this[ \t]+e-?text)",
    re.IGNORECASE)
# ... or names who made the e-text
_CREDIT_WORDS = re.compile(r"gutenberg|pgdp\.net|pglaf\.org|distributed[ \t]+proofread|books\.google\.|"
                           r"\be-?text\b|small[ \t]+print|archive\.org", re.IGNORECASE)
_TITLE = re.compile(r"^Title:[ \t]*(.+(?:\n[ \t]+\S.*)*)", re.MULTILINE)
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
#: how far into the body production notes are looked for
_CREDIT_SCAN_CHARS = 4000
_CREDIT_SCAN_PARAGRAPHS = 12


def _marker_end(text: str, m: re.Match) -> int:
    """Where the body starts after a start marker: the end of its line, or of the next line when the
    marker opens with asterisks that close only there (a title wrapped over two lines)."""
    eol = text.find("\n", m.end())
    eol = len(text) if eol < 0 else eol
    line = text[m.start():eol]
    if line.lstrip().startswith("*") and not line.rstrip().endswith("*"):
        nxt = text.find("\n", eol + 1)
        nxt = len(text) if nxt < 0 else nxt
        if text[eol + 1:nxt].rstrip().endswith("*") and nxt - eol < 200:
            return nxt
    return eol


def strip_gutenberg(text: str) -> tuple[str, dict[str, bool]]:
    """The body of a Gutenberg file and which markers were found (``start``, ``end``)."""
    starts = list(_START.finditer(text))
    begin, found_start = 0, False
    if starts:
        first_end = next((m.start() for m in _END.finditer(text, starts[0].end())), len(text))
        last = [m for m in starts if m.start() < first_end][-1]
        begin, found_start = _marker_end(text, last), True
    end_m = _END.search(text, begin)
    end = end_m.start() if end_m else len(text)
    body = _WORLD_LIBRARY.sub("", text[begin:end])
    if found_start:
        body = _drop_credits(body)
    return body.strip("\n").rstrip(), {"start": found_start, "end": end_m is not None}


def _drop_credits(body: str) -> str:
    """Remove production notes among the first paragraphs of the body (never the text after them)."""
    out: list[str] = []
    pos = 0
    n = 0
    body = body.lstrip("\n")
    for m in _PARAGRAPH.finditer(body):
        if pos >= _CREDIT_SCAN_CHARS or n >= _CREDIT_SCAN_PARAGRAPHS:
            break
        para = body[pos:m.start()]
        if not (_CREDIT_START.match(para) or _CREDIT_WORDS.search(para)):
            out.append(body[pos:m.end()])
        pos, n = m.end(), n + 1
    return "".join(out) + body[pos:]


def gutenberg_title(text: str) -> str | None:
    """The ``Title:`` of a Gutenberg header (continuation lines joined), if the header has one."""
    starts = _START.search(text)
    header = text[:starts.start()] if starts else text[:5000]
    m = _TITLE.search(header)
    if not m:
        return None
    title = " ".join(m.group(1).split())
    return title or None


# --------------------------------------------------------------------------------------------------
# Splitting

#: cut points, coarsest first; group 1 is the separator left out at a cut
_LEVELS = (
    re.compile(r"(\n[ \t]*\n\s*)"),  # blank lines: paragraphs
    re.compile(r"(\n\s*)"),  # line ends
    re.compile(r"[.!?…][\"'”’)\]]*(\s+)"),  # sentence ends (closing quotes stay with the sentence)
    re.compile(r"(\s+)"),  # spaces
)


def split_text(text: str, max_chars: int) -> list[str]:
    """Pieces of ``text``, each at most ``max_chars`` long, cut at the coarsest boundary that fits.

    Greedy: each piece takes as many whole paragraphs as fit; a paragraph longer than ``max_chars`` is
    cut at line ends, then sentence ends, then spaces, then anywhere. The separators at a cut are left
    out; everything else is kept, in order.
    """
    pieces: list[str] = []
    a = 0
    n = len(text)
    while a < n:
        if n - a <= max_chars:
            pieces.append(text[a:])
            break
        window = text[a:a + max_chars + 1]  # a separator may start right at the limit
        cut = nxt = None
        for level in _LEVELS:
            last = None
            for m in level.finditer(window):
                if 0 < m.start(1) <= max_chars:
                    last = m
            if last is not None:
                cut = a + last.start(1)
                nxt = a + last.end(1)
                break
        if cut is None:
            cut = nxt = a + max_chars
        pieces.append(text[a:cut])
        a = nxt
        while a < n and text[a] in " \t\n":
            a += 1
    return [p.rstrip() for p in pieces if p.strip()]


# --------------------------------------------------------------------------------------------------
# The reader


class TextFilesReader(Reader):
    """Plain-text books, one file each: decoded, optionally stripped of Gutenberg's header, footer and
    licence, optionally split into bounded documents."""

    name = "text_files"
    Params = TextFilesParams
    produces = ("path", "title", "text", "chunk")
    #: types of the produced columns that are not strings (for the schema of an empty shard)
    column_types = {"chunk": pa.int32()}

    def list_inputs(self, base_dir: str = "."):
        return list_files(self.params.paths, base_dir)

    def read(self, ctx: TaskContext, batch_size: int) -> Iterator[pa.RecordBatch]:
        p: TextFilesParams = self.params
        path = ctx.input.path
        fallback_title = os.path.splitext(os.path.basename(path))[0]
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as e:
            ctx.error(f"unreadable: {e.strerror or e}")
            return
        try:
            text, used = decode(raw, p.encoding)
        except DecodeError as e:
            yield self._batch(ctx, [(0, None)], fallback_title, e.reason, str(e))
            return
        ctx.count(f"encoding:{used}")
        if used == "utf-8-damaged":
            ctx.count("replaced_bytes", text.count("\ufffd"))
        title = gutenberg_title(text) or fallback_title
        if p.strip == "gutenberg":
            text, found = strip_gutenberg(text)
            if not found["start"] and not found["end"]:
                ctx.count("gutenberg_no_markers")
            elif not found["start"]:
                ctx.count("gutenberg_no_start_marker")
            elif not found["end"]:
                ctx.count("gutenberg_no_end_marker")
            else:
                ctx.count("gutenberg_stripped")
        if not text.strip():
            yield self._batch(ctx, [(0, "")], title, "empty",
                              "no text left after stripping" if p.strip != "none" and raw.strip() else "no text")
            return
        if len(text) < p.min_chars:
            yield self._batch(ctx, [(0, text)], title, "too_short", f"{len(text)} < {p.min_chars} characters")
            return
        pieces = split_text(text, p.max_chars) if p.max_chars else [text]
        ctx.count("documents", len(pieces))
        for i in range(0, len(pieces), batch_size):
            yield self._batch(ctx, list(enumerate(pieces[i:i + batch_size], start=i)), title, None, None)

    def _batch(self, ctx: TaskContext, rows: list[tuple[int, str | None]], title: str,
               reason: str | None, detail: str | None) -> pa.RecordBatch:
        n = len(rows)
        return pa.RecordBatch.from_arrays([
            pa.array([doc_id(ctx.source, ctx.input.name, c) for c, _ in rows], pa.string()),
            pa.array([ctx.input.path] * n, pa.string()),
            pa.array([title] * n, pa.string()),
            pa.array([t for _, t in rows], pa.string()),
            pa.array([c for c, _ in rows], pa.int32()),
            pa.array([reason] * n, pa.string()),
            pa.array([detail] * n, pa.string()),
        ], schema=SCHEMA)
