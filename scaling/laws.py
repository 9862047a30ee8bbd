"""The parametric scaling law and what it says about how to spend a compute budget.

The law (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", Approach 3)::

    L(N, D) = E + A / N^alpha + B / D^beta

with N the model's parameters, D the training tokens and training compute C ~= 6 N D FLOPs.

Minimising L(N, C / (6N)) over N has a closed form (set dL/dN = 0)::

    N_opt(C) = G (C/6)^(beta / (alpha + beta)),   D_opt(C) = G^-1 (C/6)^(alpha / (alpha + beta)),
    G = (alpha A / (beta B))^(1 / (alpha + beta))

Published fits (``LAWS``):

* ``chinchilla``: Hoffmann et al.'s Approach 3 fit, E 1.69337368, A 406.401018, B 410.722827,
  alpha 0.33917084, beta 0.2849083 (their N counts every parameter, embeddings included).
* ``epoch``: the refit of Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt", Epoch
  AI), from the data they read off Hoffmann's figure: E 1.8172, A 482.01, B 2085.43, alpha 0.3478,
  beta 0.3658. Its compute-optimal ratio (~20 tokens per parameter) agrees with Hoffmann's Approaches
  1 and 2, which the original Approach 3 fit did not.

What N means for a law you fit yourself is what the sweep counted: ``scaling.sweep`` counts the
parameters used in matmuls (the blocks' weight matrices and the output projection, not the input
embedding lookup nor the norms), and C = ``ModelConfig.flops_per_token(seq_len)`` x tokens, i.e.
6 N D plus the attention-score term.
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.errors import UserError

#: FLOPs in one petaflop/s-day, Kaplan et al.'s unit of compute
PF_DAY = 1e15 * 86400
#: Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", section 6.1, eq. 6.1 and the fit
#: drawn in figure 14): compute-efficient non-embedding parameters N_opt = 1.3e9 * (C / 1 PF-day)^0.73
KAPLAN_N_AT_PF_DAY = 1.3e9
KAPLAN_EXPONENT = 0.73
#: above about 4 epochs repeated tokens are worth less and less than fresh ones (Muennighoff et al.
#: 2023, "Scaling Data-Constrained Language Models"); the same figure as mixtures.spec's default cap
USEFUL_EPOCHS = 4.0


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = "custom"

    def __post_init__(self) -> None:
        for key in ("E", "A", "B", "alpha", "beta"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value)) or value <= 0:
                raise ValueError(f"law {self.name}: {key} must be a positive number, got {value!r}")

    def loss(self, n: float, d: float) -> float:
        """Predicted loss of a model of ``n`` parameters trained on ``d`` tokens."""
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    @property
    def a(self) -> float:
        """The exponent of N_opt in C: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """The exponent of D_opt in C: alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    def optimum(self, flops: float) -> tuple[float, float]:
        """(N_opt, D_opt) minimising the loss for ``flops`` = 6 N D (closed form; see the module doc)."""
        if not flops > 0:
            raise ValueError(f"a compute budget must be above 0, got {flops!r}")
        n = self.G * (flops / 6.0) ** self.a
        return n, flops / (6.0 * n)

    def params(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k != "name"}


LAWS = {
    "chinchilla": Law(E=1.69337368, A=406.401018, B=410.722827, alpha=0.33917084, beta=0.2849083,
                      name="chinchilla"),
    "epoch": Law(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658, name="epoch"),
}


def load_law(spec: str) -> Law:
    """``chinchilla``, ``epoch`` or the path of a ``FIT.json`` written by ``smelter scaling fit``."""
    if spec in LAWS:
        return LAWS[spec]
    if not os.path.exists(spec):
        raise UserError(f"--law {spec}: neither a published law ({', '.join(LAWS)}) nor an existing FIT.json")
    try:
        with open(spec, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as e:
        raise UserError(f"{spec}: cannot read the fit: {e}") from None
    params = data.get("law") if isinstance(data, dict) else None
    if not isinstance(params, dict):
        raise UserError(f"{spec}: not a FIT.json (no 'law' mapping with E, A, B, alpha, beta)")
    missing = [k for k in ("E", "A", "B", "alpha", "beta") if k not in params]
    if missing:
        raise UserError(f"{spec}: law: missing {', '.join(missing)}")
    try:
        return Law(**{k: float(params[k]) for k in ("E", "A", "B", "alpha", "beta")},
                   name=os.path.basename(spec))
    except (TypeError, ValueError) as e:
        raise UserError(f"{spec}: law: {e}") from None


def kaplan_allocation(flops: float) -> tuple[float, float]:
    """Kaplan et al. 2020's compute-efficient (N, D): N = 1.3e9 (C / PF-day)^0.73 non-embedding
    parameters, and D = C / (6 N) tokens. Their allocation puts most of a larger budget into the model;
    Hoffmann et al. traced that to learning-rate schedules not matched to each run's length."""
    n = KAPLAN_N_AT_PF_DAY * (flops / PF_DAY) ** KAPLAN_EXPONENT
    return n, flops / (6.0 * n)


def tokens_for_loss(law: Law, n: float, target: float) -> float:
    """Tokens a model of ``n`` parameters needs to reach loss ``target`` (inf when it never does)."""
    room = target - law.E - law.A / n ** law.alpha
    if room <= 0:
        return math.inf
    return (law.B / room) ** (1.0 / law.beta)


@dataclass
class InferenceAware:
    """The inference-aware allocation: the model of the same loss that minimises training plus
    inference compute, 6 N D + 2 N T (Sardana et al. 2023, "Beyond Chinchilla-Optimal")."""

    params: float
    tokens: float
    train_flops: float
    inference_flops: float
    total_flops: float
    chinchilla_total_flops: float  # the compute-optimal model's training + inference FLOPs

    @property
    def saving(self) -> float:
        """Share of the total compute saved against serving the compute-optimal model."""
        return 1.0 - self.total_flops / self.chinchilla_total_flops


def inference_aware(law: Law, flops: float, inference_tokens: float) -> InferenceAware:
    """Minimise 6 N D + 2 N T over N subject to L(N, D) = L* (the loss of the compute-optimal model for
    ``flops``), as Sardana et al. 2023 do: D(N) follows from the constraint, so it is a 1-D search over
    log N between the smallest N that can reach L* at all and N_opt (with T > 0 a smaller model pays
    less at inference than the extra training costs; with T = 0 the answer is N_opt itself)."""
    from scipy.optimize import minimize_scalar

    if inference_tokens < 0:
        raise ValueError("inference tokens must be 0 or more")
    n_opt, d_opt = law.optimum(flops)
    target = law.loss(n_opt, d_opt)
    chin_total = 6 * n_opt * d_opt + 2 * n_opt * inference_tokens
    if inference_tokens == 0:
        return InferenceAware(n_opt, d_opt, 6 * n_opt * d_opt, 0.0, chin_total, chin_total)
    n_min = (law.A / (target - law.E)) ** (1.0 / law.alpha)  # below it, L* needs infinitely many tokens

    def total(log_n: float) -> float:
        n = math.exp(log_n)
        d = tokens_for_loss(law, n, target)
        return math.log(6 * n * d + 2 * n * inference_tokens) if math.isfinite(d) else 1e300

    lo, hi = math.log(n_min) + 1e-9, math.log(n_opt)
    res = minimize_scalar(total, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    n = math.exp(res.x)
    d = tokens_for_loss(law, n, target)
    if 6 * n * d + 2 * n * inference_tokens > chin_total:  # the search's end: N_opt itself
        n, d = n_opt, d_opt
    return InferenceAware(n, d, 6 * n * d, 2 * n * inference_tokens, 6 * n * d + 2 * n * inference_tokens,
                          chin_total)


# ---------------------------------------------------------------------------------------------------------
# the project's own tokens


def corpus_tokens(folder: str) -> list[dict[str, Any]]:
    """Every ``smelter tokenize`` manifest (``tokens.json``) under ``folder``: path, tokens, documents,
    per-source tokens, largest first."""
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "**", "tokens.json"), recursive=True)):
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        totals = data.get("totals") if isinstance(data, dict) else None
        if not isinstance(totals, dict) or "tokens" not in totals or "shards" not in data:
            continue
        out.append({"path": path, "tokens": int(totals["tokens"]), "documents": int(totals.get("documents", 0)),
                    "sources": {k: int(v.get("tokens", 0)) for k, v in totals.get("sources", {}).items()}})
    out.sort(key=lambda r: -r["tokens"])
    return out


def corpus_line(tokens_held: int, d: float) -> str:
    """'the corpus holds 1.2M tokens: D is 3,400x that, i.e. 3,400 epochs' (and what that means)."""
    if tokens_held <= 0:
        return "the corpus holds no tokens"
    ratio = d / tokens_held
    head = f"the corpus holds {human(tokens_held)} tokens: "
    if ratio >= 1:
        times = f"{ratio:,.0f}" if ratio >= 10 else f"{ratio:.2f}"
        line = head + f"D is {times}x that, i.e. {times} epochs"
        if ratio > USEFUL_EPOCHS:
            line += (f" (beyond ~{USEFUL_EPOCHS:g} epochs repeated tokens are worth less and less than new ones: "
                     f"{human(d / USEFUL_EPOCHS)} unique tokens would do)")
        return line
    return head + f"D is {100 * ratio:.3g}% of it ({ratio:.3g} epochs)"


def human(x: float) -> str:
    """1234567 -> '1.23M' (K, M, B, T)."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def parse_flops(text: str | float) -> float:
    """A FLOP count: 1e21, '1e21', '5.76e23', '3 PF-days' / '3pfd' (petaflop/s-days)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower().replace("_", "").replace(",", "")
        scale = 1.0
        for suffix in ("pf-days", "pf-day", "pfdays", "pfday", "pfd"):
            if s.endswith(suffix):
                s, scale = s[: -len(suffix)].strip(), PF_DAY
                break
        try:
            value = float(s) * scale
        except ValueError:
            raise ValueError(f"cannot read {text!r} as FLOPs (e.g. 1e21, 5.76e23, 3pfd)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r}: a compute budget must be a positive number of FLOPs")
    return value
