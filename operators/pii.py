"""``pii``: replace e-mail addresses and public IP addresses in ``text``.

Same output as datatrove's ``PIIFormatter`` (0.10.1) called on one document with a fresh formatter:
the same two regular expressions, e-mails first and then IPs on the result, an IP replaced only when
``ipaddress.ip_address`` accepts it and (with ``only_public_ips``, the default) it ``is_global``; a
rejected match stays as it is. Replacements are used round-robin, a separate turn for e-mails and for
IPs, restarting with the first replacement in every document (datatrove's replacer keeps its turn
across documents, which would make a document's output depend on what came before it in the task).

Columns: ``text`` is replaced; ``pii_replacements`` (int32) counts the e-mails plus IPs replaced in
the row (null for a row an earlier step dropped, which is skipped). The step never drops a row.
Counters (``stats.json``, this step's ``counters``): ``emails`` and ``ips`` replaced, and
``docs_with_pii``.

Speed: most documents contain neither an ``@`` nor four dot-separated digit groups, and both regexes
need one, so a batch is first screened in Arrow (one C++ pass per column). In a document with an
``@``, the e-mail regex runs only over the runs of characters an address can consist of that contain
an ``@`` (with the whole text as context for its leading ``\\b``); every match lies inside such a run,
so the result is the same as scanning the whole text, at a fraction of the cost.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from operators.base import Params, RowStep, TaskContext, alive, update_batch

#: datatrove's PIIFormatter patterns, verbatim
EMAIL_RE = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])"
)
IP_RE = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)")

#: every character an EMAIL_RE match can contain: a match lies inside one maximal run of them
_EMAIL_RUN = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@\[\]:-]*")
#: any IP_RE match contains this (four groups of 1-3 ASCII digits joined by dots); RE2 and re agree on it
_IP_HINT = r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]"
_IP_HINT_RE = re.compile(_IP_HINT)

DEFAULT_EMAIL_REPLACEMENT = ("email@example.com", "firstname.lastname@example.org")
DEFAULT_IP_REPLACEMENT = ("22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206",
                          "220.127.116.11", "18.104.22.168")


@lru_cache(maxsize=65536)
def valid_ip(candidate: str, only_public: bool = True) -> bool:
    """datatrove's validator: an address ``ipaddress`` accepts, and public unless told otherwise."""
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:  # e.g. leading zeros ("010.1.1.1") are rejected
        return False
    return not only_public or ip.is_global


class PiiParams(Params):
    #: replace e-mail addresses
    emails: bool = True
    #: replace IP addresses
    ips: bool = True
    #: replace only public (``is_global``) IPs; false: every address ``ipaddress`` accepts
    only_public_ips: bool = True
    #: what e-mails become: one string, or a list used round-robin within each document
    email_replacement: str | list[str] = Field(default=list(DEFAULT_EMAIL_REPLACEMENT))
    #: what IPs become (as ``email_replacement``); datatrove's defaults did not answer pings
    ip_replacement: str | list[str] = Field(default=list(DEFAULT_IP_REPLACEMENT))

    @field_validator("email_replacement", "ip_replacement")
    @classmethod
    def _not_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("needs at least one replacement")
        return v


def _as_tuple(v: str | list[str]) -> tuple[str, ...]:
    return (v,) if isinstance(v, str) else tuple(v)


def _email_spans(text: str) -> list[tuple[int, int]]:
    """The maximal runs of e-mail characters that contain an ``@``, in order (text has an ``@``)."""
    spans: list[tuple[int, int]] = []
    rev = None
    n = len(text)
    at = text.find("@")
    while at != -1:
        if rev is None:
            rev = text[::-1]
        start = n - _EMAIL_RUN.match(rev, n - 1 - at).end()
        end = _EMAIL_RUN.match(text, at).end()
        spans.append((start, end))
        at = text.find("@", end)
    return spans


def _substitute(text: str, matches, replacements: tuple[str, ...]) -> tuple[str, int]:
    """``text`` with each match (in order, not overlapping) replaced by the next replacement in turn."""
    out: list[str] = []
    last = n = 0
    for m in matches:
        out.append(text[last:m.start()])
        out.append(replacements[n % len(replacements)])
        last = m.end()
        n += 1
    if not n:
        return text, 0
    out.append(text[last:])
    return "".join(out), n


class Pii(RowStep):
    """E-mails and public IPs in ``text`` replaced (datatrove's PIIFormatter, per document)."""

    name = "pii"
    Params = PiiParams
    reads = ("text",)
    adds = {"pii_replacements": pa.int32()}

    def setup(self) -> None:
        p: PiiParams = self.params
        self._emails = _as_tuple(p.email_replacement)
        self._ips = _as_tuple(p.ip_replacement)

    def replace_emails(self, text: str) -> tuple[str, int]:
        """``text`` with its e-mails replaced (turn restarting at the first), and how many."""
        matches = (m for start, end in _email_spans(text) for m in EMAIL_RE.finditer(text, start, end))
        return _substitute(text, matches, self._emails)

    def replace_ips(self, text: str) -> tuple[str, int]:
        """``text`` with its valid IPs replaced (turn restarting at the first), and how many."""
        public = self.params.only_public_ips
        matches = (m for m in IP_RE.finditer(text) if valid_ip(m.group(0), public))
        return _substitute(text, matches, self._ips)

    def redact(self, text: str, maybe_email: bool = True, maybe_ip: bool = True) -> tuple[str, int, int]:
        """(text, e-mails replaced, IPs replaced); the flags say what a prefilter has already excluded."""
        p: PiiParams = self.params
        n_email = n_ip = 0
        if p.emails and maybe_email and "@" in text:
            text, n_email = self.replace_emails(text)
            if n_email:  # the replacements may have removed or (custom ones) brought digit groups
                maybe_ip = _IP_HINT_RE.search(text) is not None
        if p.ips and maybe_ip:
            text, n_ip = self.replace_ips(text)
        return text, n_email, n_ip

    def __call__(self, batch: pa.RecordBatch, ctx: TaskContext) -> pa.RecordBatch:
        self.ensure_setup()
        p: PiiParams = self.params
        n = batch.num_rows
        column = batch.column("text")
        live = alive(batch)
        has_at = pc.fill_null(pc.match_substring(column, "@"), False).to_pylist() if p.emails else [False] * n
        has_ip = (pc.fill_null(pc.match_substring_regex(column, _IP_HINT), False).to_pylist() if p.ips
                  else [False] * n)
        counts: list[int | None] = [0 if ok else None for ok in live]
        changed: dict[int, str] = {}
        total_emails = total_ips = docs = 0
        for i in range(n):
            if not live[i] or not (has_at[i] or has_ip[i]):
                continue
            text, n_email, n_ip = self.redact(column[i].as_py(), has_at[i], has_ip[i])
            if n_email or n_ip:
                changed[i] = text
                counts[i] = n_email + n_ip
                total_emails += n_email
                total_ips += n_ip
                docs += 1
        ctx.count("emails", total_emails)
        ctx.count("ips", total_ips)
        ctx.count("docs_with_pii", docs)
        columns: dict[str, pa.Array] = {"pii_replacements": pa.array(counts, pa.int32())}
        if changed:
            texts = column.to_pylist()
            for i, text in changed.items():
                texts[i] = text
            columns["text"] = pa.array(texts, column.type)
        return update_batch(batch, self.name, columns)
