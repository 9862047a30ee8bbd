"""Fitting the scaling law on a sweep's runs: Approach 3 (parametric) and Approach 2 (IsoFLOP minima).

Approach 3, as Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt") fit Hoffmann et al.'s
law: with parameters (a = log A, b = log B, e = log E, alpha, beta) the law's log is a log-sum-exp,

    log L(N, D) = LSE(a - alpha log N, b - beta log D, e)

and the fit minimises ``sum_i Huber_delta(LSE(...)_i - log L_i)`` with delta = 1e-3 (a loss that is
nearly L1 on these residuals, so a few bad runs do not drag the fit) by L-BFGS-B, from a grid of
starts (Hoffmann's: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25};
4,500 starts). Every start's objective is computed first (one vectorised pass) and L-BFGS runs from
the ``top`` best of them; the fit with the lowest objective wins. Confidence intervals come from the
bootstrap: the runs are resampled with replacement and refit (from the best fit and the next few
starts), and the 2.5 / 97.5 percentiles of each parameter are reported.

Approach 2: per compute budget, a parabola of L against log N through that budget's runs; its vertex
is the budget's compute-optimal N (D = C / (6 N)); across budgets ``N_opt ~ C^a`` and ``D_opt ~ C^b``
are straight-line fits in log-log.

A run's N and D are what the results table says: ``scaling.sweep`` writes N = parameters used in
matmuls (blocks and output projection, no embedding lookup) and D = training tokens.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import glob
import itertools
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.errors import UserError
from scaling.laws import Law

HUBER_DELTA = 1e-3
#: Hoffmann et al.'s grid of starting points (also Besiroglu et al.'s)
GRID = {
    "alpha": [0.0, 0.5, 1.0, 1.5, 2.0],
    "beta": [0.0, 0.5, 1.0, 1.5, 2.0],
    "e": [-1.0, -0.5, 0.0, 0.5, 1.0],
    "a": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
    "b": [0.0, 5.0, 10.0, 15.0, 20.0, 25.0],
}
#: exponents are kept in [0, 5] during the search (beyond it exp() overflows and nothing is learnt)
_BOUNDS = [(None, None), (None, None), (None, None), (0.0, 5.0), (0.0, 5.0)]


@dataclass
class Run:
    """One training run of the sweep: N parameters, D tokens, C FLOPs, its final held-out loss."""

    name: str
    params: float
    tokens: float
    loss: float
    flops: float
    budget: float | None = None
    heldout: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# reading results


_ALIASES = {"params": ("params", "N", "n"), "tokens": ("tokens", "D", "d"), "loss": ("loss", "L"),
            "flops": ("flops", "C"), "budget": ("budget",), "heldout": ("heldout",), "name": ("name",)}


def _pick(row: dict[str, Any], key: str) -> Any:
    for k in _ALIASES[key]:
        if k in row and row[k] not in (None, ""):
            return row[k]
    return None


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _run_from_row(row: dict[str, Any], where: str, k: int) -> Run:
    values = {}
    for key in ("params", "tokens", "loss"):
        raw = _pick(row, key)
        if raw is None:
            raise UserError(f"{where}: run has no {key} (columns {'/'.join(_ALIASES[key])})")
        try:
            values[key] = float(raw)
        except (TypeError, ValueError):
            raise UserError(f"{where}: {key} {raw!r} is not a number") from None
        if not math.isfinite(values[key]) or values[key] <= 0:
            raise UserError(f"{where}: {key} must be a positive number, got {raw!r}")
    flops = _pick(row, "flops")
    budget = _pick(row, "budget")
    try:
        flops = float(flops) if flops is not None else 6 * values["params"] * values["tokens"]
        budget = float(budget) if budget is not None else None
    except (TypeError, ValueError):
        raise UserError(f"{where}: flops / budget must be numbers") from None
    name = str(_pick(row, "name") or f"run-{k}")
    extra = {key: v for key, v in row.items() if key not in {a for al in _ALIASES.values() for a in al}}
    return Run(name, values["params"], values["tokens"], values["loss"], flops, budget,
               _as_bool(_pick(row, "heldout") or False), extra)


def read_results(path: str) -> list[Run]:
    """Runs from ``results.jsonl`` or ``results.csv`` (or a sweep folder holding one). Columns: name,
    params (N), tokens (D), loss (L), and optionally flops (C; default 6 N D), budget (the IsoFLOP
    group), heldout (runs left out of the fit and predicted instead). A name on several lines (a run the
    sweep redid after its config changed) counts once, as its last line says."""
    if os.path.isdir(path):
        for name in ("results.jsonl", "results.csv"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise UserError(f"{path}: no results.jsonl or results.csv in this folder (run `smelter scaling sweep`)")
    if not os.path.exists(path):
        raise UserError(f"{path}: no such results file")
    runs: list[Run] = []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            if path.endswith(".csv"):
                for k, row in enumerate(csv.DictReader(fh)):
                    runs.append(_run_from_row(row, f"{path}:{k + 2}", k))
            else:
                for k, line in enumerate(fh):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError as e:
                        raise UserError(f"{path}:{k + 1}: not a JSON line: {e}") from None
                    if not isinstance(row, dict):
                        raise UserError(f"{path}:{k + 1}: a result is a JSON object")
                    runs.append(_run_from_row(row, f"{path}:{k + 1}", k))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None
    if not runs:
        raise UserError(f"{path}: no runs")
    latest: dict[str, Run] = {}
    for run in runs:
        latest.pop(run.name, None)  # the last line of a name wins, in its place
        latest[run.name] = run
    return list(latest.values())


# ---------------------------------------------------------------------------------------------------------
# Approach 3: the Huber fit of the log-sum-exp form


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _objective(x: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float,
               weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Sum of Huber losses of log-space residuals, and its gradient in (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = x
    u = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    m = u.max(axis=0)
    ex = np.exp(u - m)
    s = ex.sum(axis=0)
    r = m + np.log(s) - log_l
    w = ex / s  # d LSE / d u_k
    psi = np.clip(r, -delta, delta)  # Huber's derivative
    h = _huber(r, delta)
    if weights is not None:
        psi, h = psi * weights, h * weights
    grad = np.array([(psi * w[0]).sum(), (psi * w[1]).sum(), (psi * w[2]).sum(),
                     -(psi * w[0] * log_n).sum(), -(psi * w[1] * log_d).sum()])
    return float(h.sum()), grad


def _grid_starts() -> np.ndarray:
    """All grid points as rows (a, b, e, alpha, beta)."""
    return np.array([(a, b, e, al, be) for al, be, e, a, b in itertools.product(
        GRID["alpha"], GRID["beta"], GRID["e"], GRID["a"], GRID["b"])], dtype=float)


def _grid_objectives(starts: np.ndarray, log_n, log_d, log_l, delta: float, weights=None) -> np.ndarray:
    a, b, e, alpha, beta = (starts[:, i:i + 1] for i in range(5))
    u = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(starts), len(log_n)))])
    m = u.max(axis=0)
    r = m + np.log(np.exp(u - m).sum(axis=0)) - log_l
    h = _huber(r, delta)
    return (h * weights).sum(axis=1) if weights is not None else h.sum(axis=1)


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run scipy's bundled OpenBLAS on one thread meanwhile. L-BFGS-B calls BLAS on 5-vectors thousands of
    times; on a busy machine OpenBLAS's thread hand-offs made each fit 15x slower (measured: 1.5 s -> 0.07 s
    for one start on 2 shared cores). A no-op where scipy links another BLAS."""
    import scipy

    libs = []
    for path in glob.glob(os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs",
                                       "libscipy_openblas*.so*")):
        try:
            lib = ctypes.CDLL(path)
            libs.append((lib, lib.scipy_openblas_get_num_threads()))
            lib.scipy_openblas_set_num_threads(1)
        except (OSError, AttributeError):
            continue
    try:
        yield
    finally:
        for lib, n in libs:
            lib.scipy_openblas_set_num_threads(n)


def _minimise(x0: np.ndarray, args: tuple) -> tuple[np.ndarray, float]:
    from scipy.optimize import minimize

    res = minimize(_objective, x0, args=args, jac=True, method="L-BFGS-B", bounds=_BOUNDS,
                   options={"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20})
    return res.x, float(res.fun)


def _to_law(x: np.ndarray, name: str) -> Law:
    a, b, e, alpha, beta = (float(v) for v in x)
    # a term the fit drives to nothing (e -> -inf: no irreducible loss left) would underflow exp() to 0,
    # which no Law accepts; exp(-700) ~ 1e-304 keeps it a (negligible) positive number
    a, b, e = (min(max(v, -700.0), 700.0) for v in (a, b, e))
    return Law(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=max(alpha, 1e-12), beta=max(beta, 1e-12),
               name=name)


@dataclass
class Fit:
    law: Law
    objective: float
    x: np.ndarray
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    bootstrap: int = 0


def fit_law(params, tokens, losses, delta: float = HUBER_DELTA, top: int = 64,
            bootstrap: int = 200, bootstrap_starts: int = 4, seed: int = 0, name: str = "fit") -> Fit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta (see the module doc); ``bootstrap`` refits on resampled runs
    give 95% percentile intervals of E, A, B, alpha, beta and the allocation exponents a, b."""
    with single_thread_blas():
        return _fit_law(params, tokens, losses, delta, top, bootstrap, bootstrap_starts, seed, name)


def _fit_law(params, tokens, losses, delta, top, bootstrap, bootstrap_starts, seed, name) -> Fit:
    log_n = np.log(np.asarray(params, float))
    log_d = np.log(np.asarray(tokens, float))
    log_l = np.log(np.asarray(losses, float))
    if len(log_n) < 5:
        raise UserError(f"fitting 5 parameters needs at least 5 runs, got {len(log_n)}")
    starts = _grid_starts()
    order = np.argsort(_grid_objectives(starts, log_n, log_d, log_l, delta))
    results = [_minimise(starts[i], (log_n, log_d, log_l, delta)) for i in order[:top]]
    results.sort(key=lambda r: r[1])
    best_x, best_f = results[0]
    fit = Fit(_to_law(best_x, name), best_f, best_x)
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        # refit starts: the best fit, then the grid starts that led to the next-best distinct optima
        seeds = [best_x] + [x for x, _ in results[1:]][: max(0, bootstrap_starts - 1)]
        samples = []
        n = len(log_n)
        for _ in range(bootstrap):
            counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
            args = (log_n, log_d, log_l, delta, counts)
            x, _ = min((_minimise(s, args) for s in seeds), key=lambda r: r[1])
            law = _to_law(x, name)
            samples.append([law.E, law.A, law.B, law.alpha, law.beta, law.a, law.b])
        arr = np.array(samples)
        keys = ["E", "A", "B", "alpha", "beta", "a", "b"]
        fit.ci = {k: (float(np.percentile(arr[:, i], 2.5)), float(np.percentile(arr[:, i], 97.5)))
                  for i, k in enumerate(keys)}
        fit.bootstrap = bootstrap
    return fit


# ---------------------------------------------------------------------------------------------------------
# Approach 2: IsoFLOP minima


def group_by_budget(runs: list[Run]) -> dict[float, list[Run]]:
    """Runs by IsoFLOP budget: their ``budget`` when given, else their C rounded to 2 significant digits."""
    groups: dict[float, list[Run]] = {}
    for r in runs:
        key = r.budget if r.budget else float(f"{r.flops:.2g}")
        groups.setdefault(key, []).append(r)
    return dict(sorted(groups.items()))


def isoflop_minima(runs: list[Run]) -> dict[str, Any]:
    """Approach 2: per budget (3 or more model sizes), the vertex of the parabola L ~ p0 + p1 x + p2 x^2
    in x = log N; then the log-log slopes of N_opt and D_opt = C / (6 N_opt) against C."""
    budgets = []
    for c, group in group_by_budget(runs).items():
        xs = np.log([r.params for r in group])
        ys = np.array([r.loss for r in group])
        entry: dict[str, Any] = {"flops": c, "runs": len(group)}
        if len(set(np.round(xs, 9))) < 3:
            entry["note"] = "fewer than 3 model sizes: no parabola"
            budgets.append(entry)
            continue
        p2, p1, p0 = np.polyfit(xs, ys, 2)
        if p2 <= 0:
            entry["note"] = "the losses do not curve upwards: no minimum"
            budgets.append(entry)
            continue
        x_star = -p1 / (2 * p2)
        n_opt = math.exp(x_star)
        entry.update({"params_opt": n_opt, "tokens_opt": c / (6 * n_opt),
                      "loss_min": float(p0 + p1 * x_star + p2 * x_star ** 2),
                      "inside": bool(xs.min() <= x_star <= xs.max())})
        budgets.append(entry)
    out: dict[str, Any] = {"budgets": budgets}
    good = [b for b in budgets if "params_opt" in b]
    if len(good) >= 2:
        log_c = np.log([b["flops"] for b in good])
        a, ka = np.polyfit(log_c, np.log([b["params_opt"] for b in good]), 1)
        b_, kb = np.polyfit(log_c, np.log([b["tokens_opt"] for b in good]), 1)
        out.update({"a": float(a), "b": float(b_), "params_coef": float(math.exp(ka)),
                    "tokens_coef": float(math.exp(kb))})
    else:
        out["note"] = "fewer than 2 budgets with an interior minimum: no exponents"
    return out


# ---------------------------------------------------------------------------------------------------------
# everything `smelter scaling fit` writes


def fit_runs(runs: list[Run], bootstrap: int = 200, top: int = 64, seed: int = 0) -> dict[str, Any]:
    """The FIT.json content: the Approach 3 law with intervals, Approach 2, and the held-out runs'
    predicted against measured losses."""
    train = [r for r in runs if not r.heldout]
    held = [r for r in runs if r.heldout]
    fit = fit_law([r.params for r in train], [r.tokens for r in train], [r.loss for r in train],
                  bootstrap=bootstrap, top=top, seed=seed)
    law = fit.law
    residuals = [r.loss / law.loss(r.params, r.tokens) - 1 for r in train]
    out = {
        "kind": "smelter-scaling-fit",
        "law": {**law.params(), "a": law.a, "b": law.b, "G": law.G},
        "ci95": {k: list(v) for k, v in fit.ci.items()},
        "bootstrap": fit.bootstrap,
        "method": {"form": "log L = LSE(a - alpha log N, b - beta log D, e)", "loss": "huber",
                   "delta": HUBER_DELTA, "optimizer": "L-BFGS-B", "grid_starts": int(len(_grid_starts())),
                   "refined_starts": top},
        "objective": fit.objective,
        "runs": len(train),
        "rms_relative_error": float(np.sqrt(np.mean(np.square(residuals)))),
        "max_relative_error": float(np.max(np.abs(residuals))),
        "approach2": isoflop_minima(train),
        "heldout": [{"name": r.name, "params": r.params, "tokens": r.tokens, "flops": r.flops,
                     "measured": r.loss, "predicted": law.loss(r.params, r.tokens),
                     "relative_error": law.loss(r.params, r.tokens) / r.loss - 1} for r in held],
    }
    return out
