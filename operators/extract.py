"""``extract``: HTML to main text, with trafilatura (default) or resiliparse.

The raw payload is decoded first (:func:`decode_html`): the charset of the HTTP ``Content-Type``
header, then a byte-order mark or the HTML ``<meta>`` declaration, then strict UTF-8, then
statistical detection. Each
document gets a time limit; a page that hangs the extractor becomes a ledger row
(``extract_timeout``) and the batch goes on.

Defaults are FineWeb's trafilatura settings: favour precision, no comments, tables kept, and
``deduplicate=False`` so that reruns give identical text.
"""

from __future__ import annotations

import codecs
import logging
import re
import signal
import threading
from typing import Literal

import pyarrow as pa
from pydantic import Field

from operators.base import Params, RowStep, TaskContext, alive, update_batch

log = logging.getLogger(__name__)

_CHARSET_RE = re.compile(rb"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_META_RE = re.compile(rb"<meta\b[^>]*>", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
#: WHATWG: these labels mean windows-1252 in a browser
_HTML5_ALIASES = {"iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin-1": "cp1252", "latin1": "cp1252",
                  "ascii": "cp1252", "us-ascii": "cp1252", "iso-8859-9": "cp1254", "tis-620": "cp874",
                  "x-user-defined": "cp1252"}


def _codec(label: str | bytes | None) -> str | None:
    """A Python codec name for a charset label, or None when Python does not know it."""
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "ignore")
    label = label.strip().strip("\"'").lower()
    label = _HTML5_ALIASES.get(label, label)
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    # a page can't really be UTF-16 if it declares it in ASCII-compatible bytes
    return "utf-8" if name.startswith("utf-16") or name == "utf-32" else name


def charset_from_content_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    m = _CHARSET_RE.search(content_type.encode("latin-1", "ignore"))
    return _codec(m.group(1)) if m else None


def charset_from_meta(head: bytes) -> str | None:
    """The charset a ``<meta charset>`` or ``<meta http-equiv=content-type>`` declares in ``head``."""
    for tag in _META_RE.finditer(head):
        m = _CHARSET_RE.search(tag.group(0))
        if m:
            codec = _codec(m.group(1))
            if codec:
                return codec
    return None


def decode_html(body: bytes, content_type: str | None = None, prescan: int = 8192) -> tuple[str, str, str]:
    """Decode an HTML payload; return ``(text, codec, how)``.

    ``how`` says where the charset came from: ``header`` (HTTP Content-Type), ``bom``, ``meta`` (the
    first ``prescan`` bytes), ``utf-8-valid`` (the payload decodes as strict UTF-8) or ``detected``.
    """
    from resiliparse.parse.encoding import detect_encoding

    how, codec = "header", charset_from_content_type(content_type)
    if codec is None:
        for bom, name in _BOMS:
            if body.startswith(bom):
                return body[len(bom):].decode(name, "replace"), name, "bom"
        how, codec = "meta", charset_from_meta(body[:prescan])
    if codec is None:
        # bytes that are valid UTF-8 are almost never meant as anything else; detectors misread some
        try:
            return body.decode("utf-8"), "utf-8", "utf-8-valid"
        except UnicodeDecodeError:
            pass
        how, codec = "detected", _codec(detect_encoding(body)) or "utf-8"
    try:
        return body.decode(codec, "replace"), codec, how
    except (LookupError, ValueError):
        return body.decode("utf-8", "replace"), "utf-8", "fallback"


class ExtractTimeout(Exception):
    """Raised inside the extractor when a document runs past its time limit."""


class _TimeLimit:
    """A per-call wall-clock limit via SIGALRM (Python workers run steps in their main thread)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.enabled = seconds > 0 and threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if self.enabled:
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    @staticmethod
    def _fire(signum, frame):
        raise ExtractTimeout()

    def __exit__(self, *exc):
        if self.enabled:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)
        return False


class ExtractParams(Params):
    engine: Literal["trafilatura", "resiliparse"] = "trafilatura"
    #: trafilatura: prefer less text but correct (FineWeb: true)
    favor_precision: bool = True
    include_comments: bool = False
    include_tables: bool = True
    #: trafilatura: skip the readability/justext fallback comparison (faster, lower recall)
    fast: bool = False
    #: seconds per document before it is dropped as ``extract_timeout`` (0: no limit)
    timeout: float = Field(default=5.0, ge=0)
    #: payloads larger than this are dropped as ``html_too_large`` without parsing
    max_html_bytes: int = Field(default=8 * 2**20, ge=1)
    #: use smelter's exact-output speedups of trafilatura's internals (see operators.trafilatura_accel)
    accelerate: bool = True


class Extract(RowStep):
    """HTML in ``html`` (bytes) to ``text``; consumes ``html``."""

    name = "extract"
    Params = ExtractParams
    reads = ("html",)
    adds = {"text": pa.string()}
    consumes = ("html", "content_type")

    def setup(self) -> None:
        p: ExtractParams = self.params
        if p.engine == "trafilatura":
            import trafilatura

            if p.accelerate:
                from operators import trafilatura_accel

                trafilatura_accel.install()
            kwargs = dict(favor_precision=p.favor_precision, include_comments=p.include_comments,
                          include_tables=p.include_tables, fast=p.fast, deduplicate=False)
            self._extract = lambda html: trafilatura.extract(html, **kwargs)
        else:
            from resiliparse.extract.html2text import extract_plain_text

            self._extract = lambda html: extract_plain_text(
                html, main_content=True, preserve_formatting=True, comments=p.include_comments)

    def extract_one(self, body: bytes, content_type: str | None) -> tuple[str | None, str | None]:
        """(text, None) or (None, drop reason)."""
        p: ExtractParams = self.params
        if body is None or len(body) == 0:
            return None, "empty_html"
        if len(body) > p.max_html_bytes:
            return None, "html_too_large"
        html, _, _ = decode_html(body, content_type)
        try:
            with _TimeLimit(p.timeout):
                text = self._extract(html)
        except ExtractTimeout:
            return None, "extract_timeout"
        except RecursionError:
            return None, "extract_error"
        except Exception as e:  # an extractor bug on one page must not lose the batch
            log.debug("extract failed: %r", e)
            return None, "extract_error"
        if not text or not text.strip():
            return None, "extract_empty"
        return text, None

    def __call__(self, batch: pa.RecordBatch, ctx: TaskContext) -> pa.RecordBatch:
        self.ensure_setup()
        live = alive(batch)
        bodies = batch.column("html").to_pylist()
        ctypes = (batch.column("content_type").to_pylist() if "content_type" in batch.schema.names
                  else [None] * batch.num_rows)
        texts: list[str | None] = []
        reasons: list[str | None] = []
        for ok, body, ctype in zip(live, bodies, ctypes, strict=True):
            text, reason = self.extract_one(body, ctype) if ok else (None, None)
            texts.append(text)
            reasons.append(reason)
        return update_batch(batch, self.name, {"text": pa.array(texts, pa.string())}, reasons,
                            remove=self.consumes)
