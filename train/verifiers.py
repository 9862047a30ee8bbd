"""Verifiers: a reward of 1.0 or 0.0 for a model's reply against a known answer (GRPO, held-out accuracy).

* ``exact``: the reply equals the answer after trimming the ends and folding runs of white space into
  one space (case matters).
* ``numeric``: the last number in the reply (``-12``, ``3.5``, ``1,234``) equals the answer as a number,
  so ``"7 + 5 = 12"`` and ``"12"`` both verify against ``12``; a reply without a number scores 0.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from pipelines.errors import UserError

_SPACE = re.compile(r"\s+")
#: a number: optional sign, digits (optionally in groups of three split by commas), optional decimals
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def _fold(text: str) -> str:
    return _SPACE.sub(" ", str(text)).strip()


def exact(response: str, answer) -> float:
    return 1.0 if _fold(response) == _fold(answer) else 0.0


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def numeric(response: str, answer) -> float:
    want = _number(str(answer).strip())
    if want is None:
        return 0.0
    found = _NUMBER.findall(str(response))
    if not found:
        return 0.0
    got = _number(found[-1])
    return 1.0 if got is not None and got == want else 0.0


#: verifier name -> function(response, answer) -> 1.0 | 0.0
VERIFIERS = {"exact": exact, "numeric": numeric}


def get(name: str):
    """The verifier called ``name``; an unknown name is a UserError listing the known ones."""
    try:
        return VERIFIERS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown verifier {name!r}; known: {', '.join(sorted(VERIFIERS))}") from None


def verify(name: str, response: str, answer) -> float:
    """1.0 when ``response`` is right by verifier ``name``, else 0.0."""
    return get(name)(response, answer)
