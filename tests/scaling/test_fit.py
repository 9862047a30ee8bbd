"""Fitting the law: recovery of a known law from noisy synthetic runs (Approach 3), the IsoFLOP minima
(Approach 2), bootstrap intervals, `smelter scaling fit` end to end (FIT.json, the SVG plot, held-out
predictions) and bad results files."""

from __future__ import annotations

import argparse
import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from pipelines.errors import UserError
from scaling import cli
from scaling.fit import Run, fit_law, isoflop_minima, read_results
from scaling.laws import LAWS


def isoflop_grid(law, seed: int, noise: float = 0.02):
    """Runs on an IsoFLOP grid like Hoffmann et al.'s (budgets x model sizes), widened to five decades of
    compute (1e18 .. 1e23 FLOPs, 16 budgets) and N from 1e7 to 1e11 (30 sizes), keeping runs with
    0.5 <= D/N <= 2000; loss = law x (1 + noise x standard normal): 2% multiplicative noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.logspace(18, 23, 16):
        for n in np.logspace(7, 11, 30):
            d = c / (6 * n)
            if 0.5 <= d / n <= 2000:
                rows.append((n, d, c))
    n, d, c = (np.array(x) for x in zip(*rows, strict=True))
    loss = np.array([law.loss(a, b) for a, b in zip(n, d, strict=True)]) * (1 + noise * rng.standard_normal(len(n)))
    return n, d, c, loss


@pytest.mark.parametrize("name", ["chinchilla", "epoch"])
def test_fit_recovers_a_known_law(name):
    truth = LAWS[name]
    n, d, _, loss = isoflop_grid(truth, seed=1)
    assert len(n) > 200
    fit = fit_law(n, d, loss, bootstrap=0, top=8)
    assert abs(fit.law.alpha - truth.alpha) < 0.03
    assert abs(fit.law.beta - truth.beta) < 0.03
    assert abs(fit.law.E - truth.E) < 0.05
    # the compute-optimal allocation it implies is close too
    n_fit, _ = fit.law.optimum(1e24)
    n_true, _ = truth.optimum(1e24)
    assert abs(math.log10(n_fit / n_true)) < 0.3


def test_bootstrap_intervals():
    truth = LAWS["epoch"]
    n, d, _, loss = isoflop_grid(truth, seed=2)
    fit = fit_law(n, d, loss, bootstrap=8, bootstrap_starts=1, top=4, seed=0)
    assert fit.bootstrap == 8
    for key in ("E", "A", "B", "alpha", "beta", "a", "b"):
        lo, hi = fit.ci[key]
        assert lo <= hi
    assert fit.ci["alpha"][0] - 0.02 <= fit.law.alpha <= fit.ci["alpha"][1] + 0.02
    assert fit.ci["beta"][1] - fit.ci["beta"][0] < 0.1  # 250 runs pin beta down


def test_isoflop_minima_match_the_law():
    """Approach 2 on exact losses: each budget's parabola vertex is near the law's optimum, and the
    exponent of N_opt in C is beta / (alpha + beta)."""
    law = LAWS["chinchilla"]
    runs = []
    for c in (1e19, 1e20, 1e21, 1e22):
        n_opt, _ = law.optimum(c)
        for f in np.logspace(-0.6, 0.6, 9):
            n = n_opt * f
            runs.append(Run(f"r{len(runs)}", n, c / (6 * n), law.loss(n, c / (6 * n)), c, c))
    a2 = isoflop_minima(runs)
    assert len(a2["budgets"]) == 4
    for b in a2["budgets"]:
        assert b["inside"]
        assert b["params_opt"] == pytest.approx(law.optimum(b["flops"])[0], rel=0.1)
    assert a2["a"] == pytest.approx(law.a, abs=0.01)
    assert a2["b"] == pytest.approx(law.b, abs=0.01)


def _results(tmp_path, law, heldout_params: float, heldout_tokens: float):
    n, d, c, loss = isoflop_grid(law, seed=3)
    rows = [{"name": f"r{i}", "params": float(a), "tokens": float(b), "flops": float(f), "budget": float(f),
             "loss": float(lo), "heldout": False} for i, (a, b, f, lo) in enumerate(zip(n, d, c, loss, strict=True))]
    rows.append({"name": "big", "params": heldout_params, "tokens": heldout_tokens,
                 "loss": law.loss(heldout_params, heldout_tokens), "heldout": True})
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fit_command(tmp_path, capsys):
    law = LAWS["chinchilla"]
    _results(tmp_path, law, 3e11, 6e12)
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    code = cli.main(p.parse_args(["fit", str(tmp_path), "--bootstrap", "3", "--starts", "4"]))
    out = capsys.readouterr().out
    assert code == 0
    fit = json.loads((tmp_path / "FIT.json").read_text())
    assert fit["runs"] > 200 and fit["bootstrap"] == 3
    assert abs(fit["law"]["alpha"] - law.alpha) < 0.03 and abs(fit["law"]["E"] - law.E) < 0.05
    assert set(fit["ci95"]) == {"E", "A", "B", "alpha", "beta", "a", "b"}
    (held,) = fit["heldout"]
    assert held["name"] == "big" and abs(held["relative_error"]) < 0.03
    assert "held-out big: predicted" in out and "Approach 2" in out
    # the plot: valid SVG, a dot per fitted run, the frontier, the held-out marker with its prediction
    svg = ET.parse(tmp_path / "scaling.svg").getroot()
    ns = "{http://www.w3.org/2000/svg}"
    titles = [t.text for t in svg.iter(ns + "title")]
    assert sum(1 for t in titles if t and t.startswith("r")) == fit["runs"]
    assert any("(held out)" in t for t in titles) and any(t.startswith("predicted") for t in titles)
    assert any(pl.get("stroke") == "black" for pl in svg.iter(ns + "polyline"))
    # the fit is a law `plan` can use
    code = cli.main(p.parse_args(["plan", "--flops", "1e21", "--law", str(tmp_path / "FIT.json"), "--json",
                                  "--corpus", str(tmp_path)]))
    assert code == 0 and json.loads(capsys.readouterr().out)["law"]["alpha"] == fit["law"]["alpha"]


@pytest.mark.parametrize("text, suffix, message", [
    ("name,params,tokens\nr0,1e6,1e7\n", "csv", r"results.csv:2: run has no loss"),
    ("name,params,tokens,loss\nr0,1e6,lots,3.2\n", "csv", r"results.csv:2: tokens 'lots' is not a number"),
    ('{"params": 1e6, "tokens": 1e7, "loss": 3}\n{broken\n', "jsonl", r"results.jsonl:2: not a JSON line"),
    ('{"params": 1e6, "tokens": 1e7, "loss": -3}\n', "jsonl", r"results.jsonl:1: loss must be a positive number"),
    ("", "jsonl", r"results.jsonl: no runs"),
])
def test_bad_results(tmp_path, text, suffix, message):
    path = tmp_path / f"results.{suffix}"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_results(str(path))


def test_fit_errors(tmp_path, capsys):
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    assert cli.main(p.parse_args(["fit", str(tmp_path)])) == 2
    assert "no results.jsonl or results.csv in this folder" in capsys.readouterr().err
    (tmp_path / "results.jsonl").write_text("".join(
        json.dumps({"params": 1e6 * (i + 1), "tokens": 1e7, "loss": 4.0 - 0.1 * i}) + "\n" for i in range(3)))
    assert cli.main(p.parse_args(["fit", str(tmp_path)])) == 2
    err = capsys.readouterr().err
    assert err == "smelter scaling: error: fitting 5 parameters needs at least 5 runs, got 3\n"


def test_a_run_listed_twice_counts_once_as_its_last_line(tmp_path):
    """The sweep appends a run again when its config changed: the fit reads its last line only."""
    from scaling.fit import read_results

    path = tmp_path / "results.jsonl"
    path.write_text('{"name": "a", "params": 1e6, "tokens": 1e7, "loss": 3.5}\n'
                    '{"name": "b", "params": 2e6, "tokens": 1e7, "loss": 3.2}\n'
                    '{"name": "a", "params": 1e6, "tokens": 1e7, "loss": 3.4}\n'
                    '{"params": 4e6, "tokens": 1e7, "loss": 3.0}\n{"params": 4e6, "tokens": 1e7, "loss": 3.0}\n')
    runs = read_results(str(path))
    assert [(r.name, r.loss) for r in runs] == [("b", 3.2), ("a", 3.4), ("run-3", 3.0), ("run-4", 3.0)]
