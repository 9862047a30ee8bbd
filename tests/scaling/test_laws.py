"""The published laws and what `smelter scaling plan` derives from them: the closed-form optimum (checked
against a numerical minimisation at several budgets), Kaplan's allocation, the inference-aware model,
the corpus comparison on a real tokens.json, and the command's output and errors."""

from __future__ import annotations

import argparse
import json
import math

import pytest
from scipy.optimize import minimize_scalar

from pipelines.errors import UserError
from scaling import cli, laws
from scaling.laws import LAWS, Law

BUDGETS = [1e18, 1e20, 5.76e23, 1e25, 3e26]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    code = cli.main(p.parse_args(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", ["chinchilla", "epoch"])
@pytest.mark.parametrize("flops", BUDGETS)
def test_closed_form_optimum(name, flops):
    law = LAWS[name]
    n, d = law.optimum(flops)
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    assert n == pytest.approx(g * (flops / 6) ** (law.beta / (law.alpha + law.beta)), rel=1e-12)
    assert d == pytest.approx((flops / 6) ** (law.alpha / (law.alpha + law.beta)) / g, rel=1e-12)
    assert 6 * n * d == pytest.approx(flops, rel=1e-12)
    # the same point found numerically: minimise L(N, C / 6N) over log N
    res = minimize_scalar(lambda x: law.loss(math.exp(x), flops / (6 * math.exp(x))),
                          bounds=(math.log(1e3), math.log(1e15)), method="bounded", options={"xatol": 1e-10})
    assert math.exp(res.x) == pytest.approx(n, rel=1e-3)
    assert law.loss(n, d) <= res.fun + 1e-12


def test_published_figures():
    # Chinchilla's budget (5.76e23 FLOPs): Hoffmann's Approach 3 gives a ~40B model on ~2.4T tokens (their
    # Table 3 rounds to 40.6B / 2.4T), the Epoch refit ~20 tokens per parameter
    n, d = LAWS["chinchilla"].optimum(5.76e23)
    assert 3.5e10 < n < 4.6e10 and 2.0e12 < d < 2.8e12
    n, d = LAWS["epoch"].optimum(5.76e23)
    assert 15 < d / n < 30
    # exponents: N_opt ~ C^a with a = beta / (alpha + beta)
    for law in LAWS.values():
        n1, _ = law.optimum(1e21)
        n2, _ = law.optimum(1e22)
        assert math.log10(n2 / n1) == pytest.approx(law.a, rel=1e-9)
        assert law.a + law.b == pytest.approx(1)


def test_kaplan_allocation():
    n, d = laws.kaplan_allocation(laws.PF_DAY)
    assert n == pytest.approx(1.3e9) and 6 * n * d == pytest.approx(laws.PF_DAY)
    n10, _ = laws.kaplan_allocation(10 * laws.PF_DAY)
    assert n10 / n == pytest.approx(10 ** 0.73)
    # Kaplan puts far more of a large budget into parameters than Chinchilla does
    assert laws.kaplan_allocation(5.76e23)[0] > 3 * LAWS["chinchilla"].optimum(5.76e23)[0]


@pytest.mark.parametrize("name", ["chinchilla", "epoch"])
def test_inference_aware(name):
    law, flops = LAWS[name], 1e22
    n_opt, d_opt = law.optimum(flops)
    target = law.loss(n_opt, d_opt)
    same = laws.inference_aware(law, flops, 0)
    assert same.params == pytest.approx(n_opt) and same.saving == pytest.approx(0)
    previous = n_opt
    for t in (1e11, 1e12, 1e13):
        ia = laws.inference_aware(law, flops, t)
        assert law.loss(ia.params, ia.tokens) == pytest.approx(target, rel=1e-9)  # the same loss
        assert ia.params < previous and ia.tokens > d_opt  # smaller, trained longer, more so as T grows
        assert 0 < ia.saving < 1 and ia.total_flops < ia.chinchilla_total_flops
        cost = [6 * n * laws.tokens_for_loss(law, n, target) + 2 * n * t
                for n in (ia.params, ia.params * 0.99, ia.params * 1.01)]
        assert cost[0] <= min(cost[1:])  # a minimum
        previous = ia.params


def test_corpus_line_on_real_tokens(mix_tokens):
    found = laws.corpus_tokens(str(mix_tokens.parent))
    mine = [m for m in found if m["path"] == str(mix_tokens / "tokens.json")]
    assert len(mine) == 1 and mine[0]["tokens"] > 100_000
    assert sum(mine[0]["sources"].values()) == mine[0]["tokens"]
    held = mine[0]["tokens"]
    line = laws.corpus_line(held, 3400 * held)
    assert line == f"the corpus holds {laws.human(held)} tokens: D is 3,400x that, i.e. 3,400 epochs" + line[
        line.index(" (beyond"):]
    assert "unique tokens would do" in line
    assert "epochs" in laws.corpus_line(held, held / 2) and "50%" in laws.corpus_line(held, held / 2)


def test_plan_command(mix_tokens, capsys):
    code, out, _ = _run(["plan", "--flops", "5.76e23", "--inference-tokens", "2e12",
                         "--corpus", str(mix_tokens.parent)], capsys)
    assert code == 0
    assert "compute-optimal" in out and "Kaplan et al. 2020" in out and "serving 2T tokens" in out
    assert "the corpus holds" in out and "epochs" in out
    code, out, _ = _run(["plan", "--flops", "1e21", "--law", "epoch", "--json", "--corpus", "/nonexistent"], capsys)
    r = json.loads(out)
    n, d = LAWS["epoch"].optimum(1e21)
    assert r["optimal"]["params"] == pytest.approx(n) and r["optimal"]["tokens_per_param"] == pytest.approx(d / n)
    assert r["corpus"]["manifests"] == []


def test_plan_with_own_fit(tmp_path, capsys):
    fit = tmp_path / "FIT.json"
    fit.write_text(json.dumps({"law": {"E": 2.0, "A": 300.0, "B": 900.0, "alpha": 0.3, "beta": 0.32}}))
    code, out, _ = _run(["plan", "--flops", "3pfd", "--law", str(fit), "--json"], capsys)
    assert code == 0
    n, _ = Law(2.0, 300.0, 900.0, 0.3, 0.32).optimum(3 * laws.PF_DAY)
    assert json.loads(out)["optimal"]["params"] == pytest.approx(n)


@pytest.mark.parametrize("argv, message", [
    (["plan", "--flops", "lots"], "--flops: cannot read 'lots' as FLOPs"),
    (["plan", "--flops=-1e20"], "--flops: '-1e20': a compute budget must be a positive number"),
    (["plan", "--flops", "1e20", "--law", "kaplan"], "--law kaplan: neither a published law"),
    (["plan", "--flops", "1e20", "--inference-tokens", "many"], "--inference-tokens: cannot read"),
])
def test_plan_errors(argv, message, capsys):
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert err.startswith("smelter scaling: error: " + message) and err.count("\n") == 1


def test_bad_fit_files(tmp_path):
    bad = tmp_path / "FIT.json"
    bad.write_text(json.dumps({"law": {"E": 2.0, "A": 300.0, "alpha": 0.3, "beta": 0.3}}))
    with pytest.raises(UserError, match="law: missing B"):
        laws.load_law(str(bad))
    bad.write_text(json.dumps({"law": {"E": 2.0, "A": 300.0, "B": -1, "alpha": 0.3, "beta": 0.3}}))
    with pytest.raises(UserError, match="B must be a positive number"):
        laws.load_law(str(bad))
    bad.write_text("{not json")
    with pytest.raises(UserError, match="cannot read the fit"):
        laws.load_law(str(bad))
