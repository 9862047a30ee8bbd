"""The audit reports' figures: the run report against stats.json and a direct pyarrow recount of the shards and
the ledger, the mixture report against the training manifest, the Markdown / JSON formats and the CLI."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mixtures import report_cli
from mixtures.reports import mixture_report, run_report
from operators.writers import read_arrow


@pytest.fixture(scope="module")
def run_data(mix_run):
    return run_report.build_run_report(mix_run[0])


@pytest.fixture(scope="module")
def mix_data(mix_plan):
    return mixture_report.build_mixture_report(mix_plan)


def _tables(out, key: str) -> dict[str, pa.Table]:
    manifest = json.loads((out / "manifest.json").read_text())
    parts: dict[str, list[pa.Table]] = {}
    for entry in manifest[key]:
        parts.setdefault(entry["source"], []).append(read_arrow(str(out / entry["path"])))
    return {s: pa.concat_tables(ts) for s, ts in parts.items()}


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def _recount(values: pa.Array, edges: list[float], closed_last: bool) -> list[int]:
    """Bin counts by comparisons: bin i = [edges[i], edges[i+1]); the open or closed last bin as documented."""
    values = values.cast(pa.float64())
    nbins = len(edges) - 1 if closed_last else len(edges)
    out = []
    for i in range(nbins):
        mask = pc.greater_equal(values, edges[i]) if i > 0 else pc.is_valid(values)
        if i + 1 < nbins:
            mask = pc.and_(mask, pc.less(values, edges[i + 1]))
        out.append(pc.sum(mask.cast(pa.int64())).as_py() or 0)
    return out


def test_run_funnel_and_drops_equal_stats(mix_run, run_data):
    out, stats = mix_run
    assert stats == json.loads((out / "stats.json").read_text())
    assert set(run_data["sources"]) == set(stats["sources"]) == {"web", "code", "books"}
    for name, s in stats["sources"].items():
        r = run_data["sources"][name]
        assert all(r["checks"].values()), (name, r["checks"])
        funnel = r["funnel"]
        assert funnel[0]["rows_in"] == s["rows_read"]
        assert funnel[0]["dropped"] == sum(s["reader"].get("drops", {}).values())
        steps = [f for f in funnel if f["kind"] == "step"]
        assert [(f["stage"], f["rows_in"], f["rows_out"]) for f in steps] == \
            [(st["step"], st["rows_in"], st["rows_out"]) for st in s["steps"]]
        globals_ = [f for f in funnel if f["kind"] == "global"]
        assert [f["dropped"] for f in globals_] == \
            [sum(g["drops"].get(name, {}).values()) for g in stats["global_steps"]]
        for a, b in zip(funnel, funnel[1:], strict=False):
            assert b["rows_in"] == a["rows_out"] and b["rows_out"] == b["rows_in"] - b["dropped"]
        assert funnel[-1]["rows_out"] == s["rows_kept"]
        # every (step, reason) that dropped a document of the source, once, with the count stats.json has
        expected = {(s["reader"]["name"], r, n) for r, n in s["reader"].get("drops", {}).items()}
        expected |= {(st["step"], r, n) for st in s["steps"] for r, n in st["drops"].items()}
        expected |= {(g["step"], r, n) for g in stats["global_steps"] for r, n in g["drops"].get(name, {}).items()}
        assert {(d["step"], d["reason"], d["count"]) for d in r["drops"]} == expected
        assert len(r["drops"]) == len(expected)
        for d in r["drops"]:
            assert _get(stats, d["stats_path"]) == d["count"]
        for e in r["seconds"]:
            assert _get(stats, e["stats_path"]) == e["seconds"]
    web = run_data["sources"]["web"]
    assert {d["reason"] for d in web["languages"]["langid_drops"]} >= {"wrong_language"}
    for g, d in zip(stats["global_steps"], run_data["dedup"], strict=True):
        assert d["step"] == g["step"] and d["drops"] == g["drops"]
        if "size_histogram" in g:
            assert {b["size"]: b["clusters"] for b in d["size_histogram"]} == g["size_histogram"]
            assert [c["size"] for c in d["largest"]] == [c["size"] for c in g["largest"]]


def test_run_histograms_equal_a_pyarrow_recount(mix_run, run_data):
    out, _ = mix_run
    shards, ledger = _tables(out, "shards"), _tables(out, "ledger")
    bins = run_data["bins"]
    assert bins["length_edges"][:3] == [0, 1, 10] and bins["quality_edges"][0] == 0 and bins["quality_edges"][-1] == 1
    for name, r in run_data["sources"].items():
        kept, dropped = shards[name], ledger[name]
        lengths = pc.utf8_length(kept.column("text")).combine_chunks()
        assert r["kept"]["rows"] == kept.num_rows == r["rows_kept"]
        assert r["kept"]["chars"] == pc.sum(lengths).as_py()
        assert r["kept"]["lengths"] == _recount(lengths, bins["length_edges"], closed_last=False)
        assert sum(r["kept"]["lengths"]) == kept.num_rows
        ledger_lengths = dropped.column("length").combine_chunks()
        assert r["dropped"]["rows"] == dropped.num_rows == r["rows_dropped"]
        assert r["dropped"]["lengths"] == _recount(ledger_lengths, bins["length_edges"], closed_last=False)
        scores = kept.column("quality_score").combine_chunks()
        q = r["kept"]["quality"]
        assert q["counts"] == _recount(scores, bins["quality_edges"], closed_last=True)
        assert sum(q["counts"]) + q["missing"] == kept.num_rows
        assert q["mean"] == pytest.approx(pc.mean(scores.cast(pa.float64())).as_py(), abs=1e-4)
        column = "lang" if "lang" in kept.column_names else "language" if "language" in kept.column_names else None
        if column is None:
            assert r["languages"] is None or not r["languages"]["kept"]
        else:
            vc = pc.value_counts(kept.column(column).combine_chunks())
            assert r["languages"]["kept"] == dict(zip(vc.field("values").to_pylist(),
                                                      vc.field("counts").to_pylist(), strict=True))
    assert run_data["sources"]["web"]["languages"]["kept"].get("en", 0) > 0
    # the examples are real rows: kept ones from the shards, dropped ones from the ledger with their reason
    for name, r in run_data["sources"].items():
        ids = set(shards[name].column("id").to_pylist())
        assert r["examples"]["kept"] and all(e["id"] in ids for e in r["examples"]["kept"])
        led = {row["id"]: (row["step"], row["reason"]) for row in ledger[name].select(["id", "step", "reason"]).to_pylist()}
        assert r["examples"]["dropped"]
        assert all(led[e["id"]] == (e["step"], e["reason"]) for e in r["examples"]["dropped"])


def test_run_report_is_deterministic_and_reads_a_run_without_manifest(mix_run, run_data, tmp_path):
    out, _ = mix_run
    again = run_report.build_run_report(out)
    text = json.dumps(again, sort_keys=True)
    assert text == json.dumps(run_data, sort_keys=True)
    assert str(out) not in text  # no absolute paths
    # without manifest.json the shards and ledger files are found by their folders; same figures
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("_tasks", "report.*"))
    (copy / "manifest.json").unlink()
    bare = run_report.build_run_report(copy)
    for name, r in run_data["sources"].items():
        assert bare["sources"][name]["kept"] == r["kept"] and bare["sources"][name]["dropped"] == r["dropped"]
    assert run_report.render_html(again) == run_report.render_html(run_data)


def _cli(capsys, *argv) -> tuple[int, str]:
    import argparse

    p = argparse.ArgumentParser()
    report_cli.add_arguments(p)
    rc = report_cli.main(p.parse_args([str(a) for a in argv]))
    return rc, capsys.readouterr().out


def test_run_report_formats(mix_run, run_data, capsys, tmp_path):
    out, stats = mix_run
    rc, text = _cli(capsys, out, "--format", "json")
    assert rc == 0 and json.loads(text) == json.loads(json.dumps(run_data))
    rc, md = _cli(capsys, out, "--format", "md")
    assert rc == 0 and md.startswith("# Run report: mix")
    for name, s in stats["sources"].items():
        assert f"## {name}" in md
        assert f"| {s['steps'][0]['step']} | step | {s['steps'][0]['rows_in']:,} |" in md
    assert "| langid | wrong_language |" in md
    rc, printed = _cli(capsys, out, "--output", tmp_path / "r.html")
    assert rc == 0 and printed.strip() == str(tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http://" not in page.split("<main>")[0]
    assert page.count("<svg") == page.count("<title id=") > 10
    # the run wrote its own report.html at the end, the same page
    assert (out / "report.html").read_text() == page


def test_mixture_report_equals_the_plan_and_the_runs(mix_plan, mix_data):
    plan = json.loads((mix_plan / "train_manifest.json").read_text())
    assert mix_data["summary"]["tokens"] == plan["tokens"] and mix_data["summary"]["samples"] == plan["samples"]
    assert set(mix_data["sources"]) == set(plan["sources"])
    for name, s in plan["sources"].items():
        r = mix_data["sources"][name]
        for k in ("documents", "tokens", "epochs", "max_epochs", "samples", "tokens_drawn"):
            assert r[k] == s[k], (name, k)
        assert r["share"] == pytest.approx(s["tokens_drawn"] / plan["tokens"], abs=1e-6)
        stats = json.loads(open(f"{s['run']['path']}/stats.json").read())
        assert r["run"]["stats_found"] and r["run"]["config_matches"]
        src = stats["sources"][name]
        assert r["run"]["funnel"][0]["rows_in"] == src["rows_read"]
        assert r["run"]["funnel"][-1]["rows_out"] == src["rows_kept"]
        assert [f["rows_out"] for f in r["run"]["funnel"] if f["kind"] == "step"] == [st["rows_out"] for st in src["steps"]]
    assert len(mix_data["phases"]) == len(plan["phases"]) == 2
    for p, ph in zip(mix_data["phases"], plan["phases"], strict=True):
        assert (p["first_token"], p["tokens"], p["end_token"]) == \
            (ph["first_token"], ph["tokens"], ph["first_token"] + ph["tokens"])
        assert sum(ps["tokens"] for ps in p["sources"].values()) == ph["tokens"]
        for name, ps in ph["sources"].items():
            assert p["sources"][name]["tokens"] == ps["tokens"]
            assert p["sources"][name]["token_share"] == pytest.approx(ps["tokens"] / ph["tokens"], abs=1e-6)
        withq = [ps["quality"] for ps in ph["sources"].values() if ps.get("quality")]
        if withq:
            assert p["quality"]["tokens"] == [sum(x) for x in zip(*(q["tokens"] for q in withq), strict=True)]
    # phases tile the training tokens
    assert mix_data["phases"][0]["first_token"] == 0
    assert mix_data["phases"][1]["first_token"] == mix_data["phases"][0]["end_token"]
    assert mix_data["phases"][-1]["end_token"] == plan["tokens"]


def test_mixture_report_formats(mix_plan, mix_data, capsys, tmp_path):
    rc, text = _cli(capsys, mix_plan, "--format", "json")
    assert rc == 0 and json.loads(text) == json.loads(json.dumps(mix_data))
    rc, md = _cli(capsys, mix_plan, "--format", "md", "--output", tmp_path / "m.md")
    md = (tmp_path / "m.md").read_text()
    assert rc == 0 and md.startswith("# Mixture report: test-mix")
    assert "| main | 0 |" in md and "## Funnel of web" in md
    rc, printed = _cli(capsys, mix_plan, "--output", tmp_path / "m.html")
    page = (tmp_path / "m.html").read_text()
    assert rc == 0 and "<script" not in page and page.count("<svg") >= 4


def test_cli_exits_2_on_a_folder_that_is_neither(tmp_path, capsys):
    from pipelines import cli

    (tmp_path / "some.txt").write_text("x")
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a pipeline run folder" in err and str(tmp_path) in err
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "stats.json").write_text("{not json")
    assert cli.main(["report", str(tmp_path), "--format", "md"]) == 2
    err = capsys.readouterr().err
    assert "stats.json" in err and "Traceback" not in err
