"""The audit report of a mixture: ``PLAN_DIR/mixture.html`` (and the same figures as JSON or Markdown).

It reads ``PLAN_DIR/train_manifest.json`` (the curriculum plan) and, for every source, the stats.json of the
pipeline run the source's documents came from, and shows:

* tokens per source per phase, and each source's share of the phase and of the whole run;
* epochs per source (the most passes over any one document) against its cap, and per phase;
* the curriculum over the training tokens: every phase as a block [first_token, first_token + tokens)
  along the training-token axis, split by the sources' tokens (a stacked-bar / Marimekko chart);
* the quality_score distribution of the tokens each phase draws, per source;
* the pipeline funnel of each source, from its run's stats.json.

Figures from the manifest are marked ``data-src="plan"`` with their path in train_manifest.json; figures
the report derives (shares, sums, the funnels) ``data-src="report"`` with their path in the report dict.
"""

from __future__ import annotations

import json
import os
from typing import Any

from mixtures.reports import html as H
from mixtures.reports.run_report import _md_table, _sorted, load_json, pct, source_funnel
from pipelines.errors import UserError

SCHEMA_VERSION = 1
MANIFEST = "train_manifest.json"


def _share(part: float | None, whole: float | None) -> float | None:
    return round(part / whole, 6) if part is not None and whole else None


def _run_funnel(name: str, run: dict | None) -> dict[str, Any]:
    """The source's funnel in the pipeline run it came from (None figures when the run's stats are gone)."""
    path = (run or {}).get("path")
    out: dict[str, Any] = {"pipeline": (run or {}).get("pipeline"), "config_hash": (run or {}).get("config_hash"),
                           "name": os.path.basename(path.rstrip("/")) if path else None,
                           "stats_found": False, "funnel": [], "rows_read": None, "rows_kept": None}
    stats_path = os.path.join(path, "stats.json") if path else None
    if not stats_path or not os.path.isfile(stats_path):
        out["problem"] = f"no stats.json in {path}" if path else "the manifest names no run"
        return out
    stats = load_json(stats_path, "run stats")
    source = (stats.get("sources") or {}).get(name)
    if source is None:
        out["problem"] = f"the run has no source {name!r}"
        return out
    out.update({"stats_found": True, "rows_read": int(source.get("rows_read", 0)),
                "rows_kept": int(source.get("rows_kept", 0)),
                "config_matches": stats.get("config_hash") == (run or {}).get("config_hash"),
                "funnel": [{k: v for k, v in st.items() if k != "stats_path"}
                           for st in source_funnel(name, source, stats.get("global_steps") or [])]})
    return out


def build_mixture_report(plan_dir: str | os.PathLike) -> dict[str, Any]:
    """All figures of the mixture report; JSON-serialisable and deterministic (sorted keys)."""
    plan_dir = os.fspath(plan_dir)
    path = os.path.join(plan_dir, MANIFEST)
    if not os.path.isfile(path):
        raise UserError(f"{plan_dir}: not a mixture plan folder (no {MANIFEST})")
    plan = load_json(path, "training manifest")
    if not isinstance(plan, dict) or not isinstance(plan.get("sources"), dict) or \
            not isinstance(plan.get("phases"), list):
        raise UserError(f"{path}: not a smelter training manifest (no 'sources' / 'phases')")
    total = plan.get("tokens") or 0
    names = sorted(plan["sources"])
    sources = {}
    for name in names:
        s = plan["sources"][name]
        sources[name] = {
            "documents": s.get("documents"), "tokens": s.get("tokens"), "max_epochs": s.get("max_epochs"),
            "epochs": s.get("epochs"), "samples": s.get("samples"), "tokens_drawn": s.get("tokens_drawn"),
            "share": _share(s.get("tokens_drawn"), total),
            "heldout_documents": s.get("heldout_documents"),
            "heldout_samples": ((plan.get("heldout") or {}).get("sources") or {}).get(name, {}).get("samples"),
            "run": _run_funnel(name, s.get("run")),
        }
    phases = []
    for i, ph in enumerate(plan["phases"]):
        ptokens = ph.get("tokens") or 0
        entry: dict[str, Any] = {
            "index": i, "name": ph.get("name"), "share": ph.get("share"), "samples": ph.get("samples"),
            "tokens": ptokens, "first_token": ph.get("first_token"), "first_sample": ph.get("first_sample"),
            "end_token": (ph.get("first_token") or 0) + ptokens, "sources": {}}
        edges, qsum = None, None
        for name in sorted(ph.get("sources") or {}):
            ps = ph["sources"][name]
            entry["sources"][name] = {"weight": ps.get("weight"), "where": ps.get("where"),
                                      "samples": ps.get("samples"), "tokens": ps.get("tokens"),
                                      "documents": ps.get("documents"), "pool_tokens": ps.get("pool_tokens"),
                                      "epochs": ps.get("epochs"), "token_share": _share(ps.get("tokens"), ptokens)}
            q = ps.get("quality")
            if isinstance(q, dict) and q.get("edges") and q.get("tokens"):
                entry["sources"][name]["quality"] = {"edges": list(q["edges"]), "tokens": list(q["tokens"])}
                if edges is None:
                    edges, qsum = list(q["edges"]), [0] * len(q["tokens"])
                if list(q["edges"]) == edges:
                    qsum = [a + b for a, b in zip(qsum, q["tokens"], strict=True)]
        entry["quality"] = {"edges": edges, "tokens": qsum} if edges else None
        phases.append(entry)
    tok = plan.get("tokenizer") or {}
    mix = plan.get("mixture") or {}
    report = {
        "kind": "smelter-mixture-report", "schema_version": SCHEMA_VERSION,
        "mixture": {"name": mix.get("name"), "config_hash": mix.get("config_hash"),
                    "file": os.path.basename(mix["path"]) if mix.get("path") else None,
                    "plan": os.path.basename(os.path.abspath(plan_dir))},
        "summary": {"seq_len": plan.get("seq_len"), "seed": plan.get("seed"), "budget_tokens": plan.get("budget_tokens"),
                    "samples": plan.get("samples"), "tokens": total, "phases": len(phases), "sources": len(names),
                    "tokenizer": {"vocab_size": tok.get("vocab_size"), "dtype": tok.get("dtype"),
                                  "eod_id": tok.get("eod_id"), "sha256": tok.get("sha256"),
                                  "file": os.path.basename(tok["path"]) if tok.get("path") else None}},
        "sources": sources,
        "phases": phases,
    }
    return _sorted(report)


# ---------------------------------------------------------------- HTML


def _summary(data: dict, colours: dict[str, str]) -> str:
    sm = data["summary"]
    top = H.kpis([("training tokens", H.fig(sm["tokens"], "plan", "tokens")),
                  ("budget", H.fig(sm["budget_tokens"], "plan", "budget_tokens")),
                  ("samples", H.fig(sm["samples"], "plan", "samples")),
                  ("sequence length", H.fig(sm["seq_len"], "plan", "seq_len")),
                  ("vocabulary", H.fig(sm["tokenizer"]["vocab_size"], "plan", "tokenizer.vocab_size")),
                  ("seed", H.fig(sm["seed"], "plan", "seed"))])
    rows = []
    for name, s in data["sources"].items():
        p = H.path("sources", name)
        rows.append([f"{H.swatch(colours[name])}{H.esc(name)}",
                     H.cell(s["documents"], "plan", H.path(p, "documents")),
                     H.cell(s["tokens"], "plan", H.path(p, "tokens")),
                     H.cell(s["tokens_drawn"], "plan", H.path(p, "tokens_drawn")),
                     H.cell(s["share"], "report", H.path(p, "share"), "pct", 1),
                     H.cell(s["samples"], "plan", H.path(p, "samples")),
                     H.cell(s["epochs"], "plan", H.path(p, "epochs"), "float", 2),
                     H.cell(s["max_epochs"], "plan", H.path(p, "max_epochs"), "float", 2),
                     H.cell(s["heldout_documents"], "plan", H.path(p, "heldout_documents")),
                     H.cell(s["heldout_samples"], "plan", H.path("heldout", "sources", name, "samples")),
                     f"{H.esc(s['run']['pipeline'])} <code>{H.esc(s['run']['config_hash'])}</code>"])
    return top + H.table(["source", "documents", "tokens (all docs)", "tokens drawn", "share", "samples",
                          "epochs", "max epochs", "held-out docs", "held-out samples", "pipeline run"], rows,
                         [False] + [True] * 9 + [False])


def _tokens_section(data: dict, colours: dict[str, str]) -> str:
    phases = data["phases"]
    headers = ["source"] + [f"{p['name']} tokens" for p in phases] + [f"{p['name']} share" for p in phases] + \
        ["total drawn"]
    rows = []
    for name, s in data["sources"].items():
        row = [f"{H.swatch(colours[name])}{H.esc(name)}"]
        for p in phases:
            ps = p["sources"].get(name)
            row.append(H.cell(ps["tokens"], "plan", H.path("phases", p["index"], "sources", name, "tokens"))
                       if ps else H.cell(None))
        for p in phases:
            ps = p["sources"].get(name)
            row.append(H.cell(ps["token_share"], "report", H.path("phases", p["index"], "sources", name, "token_share"),
                              "pct", 1) if ps else H.cell(None))
        row.append(H.cell(s["tokens_drawn"], "plan", H.path("sources", name, "tokens_drawn")))
        rows.append(row)
    total = ["all"] + [H.cell(p["tokens"], "plan", H.path("phases", p["index"], "tokens")) for p in phases] + \
        ["" for _ in phases] + [H.cell(data["summary"]["tokens"], "plan", "tokens")]
    table = H.table(headers, rows, [False] + [True] * (len(headers) - 1), total)
    bars = [H.Bar(name, s["tokens_drawn"], colours[name], "plan", H.path("sources", name, "tokens_drawn"))
            for name, s in data["sources"].items()]
    return table + H.hbar_chart(bars, "tokens drawn per source, all phases", width=640, label_width=120)


def _epochs_section(data: dict, colours: dict[str, str]) -> str:
    bars = [H.Bar(name, s["epochs"] or 0, colours[name], "plan", H.path("sources", name, "epochs"), "float", 2,
                  marker=s["max_epochs"]) for name, s in data["sources"].items()]
    top = max([s["max_epochs"] or 0 for s in data["sources"].values()] + [b.value for b in bars])
    chart = H.hbar_chart(bars, "epochs per source (the dark tick: max_epochs)", width=560, label_width=120,
                         max_value=top)
    rows = []
    for name, s in data["sources"].items():
        row = [f"{H.swatch(colours[name])}{H.esc(name)}"]
        for p in data["phases"]:
            ps = p["sources"].get(name)
            row.append(H.cell(ps["epochs"], "plan", H.path("phases", p["index"], "sources", name, "epochs"), "float", 2)
                       if ps else H.cell(None))
        row += [H.cell(s["epochs"], "plan", H.path("sources", name, "epochs"), "float", 2),
                H.cell(s["max_epochs"], "plan", H.path("sources", name, "max_epochs"), "float", 2)]
        rows.append(row)
    headers = ["source"] + [f"{p['name']} epochs" for p in data["phases"]] + ["epochs (all phases)", "max epochs"]
    table = H.table(headers, rows, [False] + [True] * (len(headers) - 1))
    return f'<div class="grid"><div>{chart}</div><div>{table}</div></div>'


def _curriculum_section(data: dict, colours: dict[str, str]) -> str:
    segments = []
    for p in data["phases"]:
        shares = [(name, ps["tokens"] or 0, colours.get(name, H.NEUTRAL_COLOUR), "report",
                   H.path("phases", p["index"], "sources", name, "token_share"))
                  for name, ps in p["sources"].items()]
        segments.append(H.Segment(p["name"], p["first_token"] or 0, p["tokens"], shares))
    chart = H.curriculum_chart(segments, data["summary"]["tokens"] or 0, "the curriculum over the training tokens")
    rows = []
    for p in data["phases"]:
        i = p["index"]
        wheres = sorted({ps["where"] for ps in p["sources"].values() if ps.get("where")})
        rows.append([H.esc(p["name"]), H.cell(p["first_token"], "plan", H.path("phases", i, "first_token")),
                     H.cell(p["end_token"], "report", H.path("phases", i, "end_token")),
                     H.cell(p["tokens"], "plan", H.path("phases", i, "tokens")),
                     H.cell(p["share"], "plan", H.path("phases", i, "share"), "pct", 1),
                     H.cell(p["first_sample"], "plan", H.path("phases", i, "first_sample")),
                     H.cell(p["samples"], "plan", H.path("phases", i, "samples")),
                     ", ".join(f"{H.esc(n)} {H.fig(ps['weight'], 'plan', H.path('phases', i, 'sources', n, 'weight'), 'float', 2)}"
                               for n, ps in p["sources"].items()),
                     "<br>".join(f"<code>{H.esc(w)}</code>" for w in wheres) or "all documents"])
    table = H.table(["phase", "first token", "end token", "tokens", "share", "first sample", "samples",
                     "weights", "where"], rows, [False] + [True] * 6 + [False, False])
    return chart + table


def _quality_section(data: dict, colours: dict[str, str]) -> str:
    out = []
    for p in data["phases"]:
        q = p["quality"]
        if not q:
            out.append(f'<p class="note">{H.esc(p["name"])}: no quality scores in this phase.</p>')
            continue
        edges = q["edges"]
        labels = [f"{edges[k]:.2f}\u2013{edges[k + 1]:.2f}" for k in range(len(edges) - 1)]
        chart_series = [H.Series(name, ps["quality"]["tokens"], colours.get(name, H.NEUTRAL_COLOUR))
                        for name, ps in p["sources"].items()
                        if ps.get("quality") and list(ps["quality"]["edges"]) == list(edges)]
        rows = []
        for k, label in enumerate(labels):
            row = [H.esc(label)]
            for s in chart_series:
                row.append(H.cell(s.counts[k], "plan", H.path("phases", p["index"], "sources", s.name, "quality",
                                                              "tokens", k)))
            row.append(H.cell(q["tokens"][k], "report", H.path("phases", p["index"], "quality", "tokens", k)))
            rows.append(row)
        chart = H.histogram(labels, chart_series, f"{p['name']}: quality_score of the tokens drawn", width=540,
                            y_label="tokens")
        table = "<details><summary>the tokens per bin</summary>" + H.table(
            ["quality_score"] + [s.name for s in chart_series] + ["all"], rows,
            [False] + [True] * (len(chart_series) + 1)) + "</details>"
        out.append(f"<div>{chart}{table}</div>")
    return '<div class="grid">' + "".join(out) + "</div>"


def _funnels_section(data: dict, colours: dict[str, str]) -> str:
    out = []
    for name, s in data["sources"].items():
        run = s["run"]
        title = f"{name}: pipeline {run['pipeline']} ({run['name']})"
        if not run["stats_found"]:
            out.append(f'<div class="card"><b>{H.esc(title)}</b>: {H.esc(run.get("problem"))}</div>')
            continue
        base = H.path("sources", name, "run", "funnel")
        bars = [H.Bar(st["stage"], st["rows_out"], colours[name], "report", H.path(base, k, "rows_out"))
                for k, st in enumerate(run["funnel"])]
        warn = "" if run.get("config_matches", True) else \
            '<p class="note"><b>The run was rerun with another configuration since this plan was made.</b></p>'
        rows = [[H.esc(st["stage"]), H.cell(st["rows_in"], "report", H.path(base, k, "rows_in")),
                 H.cell(st["dropped"], "report", H.path(base, k, "dropped")),
                 H.cell(st["rows_out"], "report", H.path(base, k, "rows_out"))] for k, st in enumerate(run["funnel"])]
        table = "<details><summary>the funnel as a table</summary>" + H.table(
            ["stage", "rows in", "dropped", "rows out"], rows, [False, True, True, True]) + "</details>"
        out.append(f"<div>{H.funnel_chart(bars, title, width=540)}{warn}{table}</div>")
    return '<div class="grid">' + "".join(out) + "</div>"


def render_html(data: dict) -> str:
    """The mixture page of :func:`build_mixture_report`'s figures."""
    H.reset_ids()
    colours = H.source_colours(data["sources"])
    mx, sm = data["mixture"], data["summary"]
    tk = sm["tokenizer"]
    meta = (f"mixture <code>{H.esc(mx['name'])}</code> ({H.esc(mx['file'])}) \u00b7 config "
            f"<code>{H.esc(mx['config_hash'])}</code> \u00b7 plan <code>{H.esc(mx['plan'])}</code> \u00b7 "
            f"tokenizer {H.esc(tk['file'])} <code>{H.esc((tk['sha256'] or '')[:12])}</code> {H.esc(tk['dtype'])}")
    sections = [
        ("summary", "Summary", _summary(data, colours), None),
        ("curriculum", "Curriculum over the training tokens", _curriculum_section(data, colours),
         "Each phase spans [first token, end token) of training; its blocks are the sources' shares of it."),
        ("tokens", "Tokens per source and phase", _tokens_section(data, colours), None),
        ("epochs", "Epochs per source", _epochs_section(data, colours),
         "Epochs: the most passes over any one document of the source (the cap is max_epochs)."),
        ("quality", "Quality per phase", _quality_section(data, colours),
         "Expected tokens drawn per quality_score bin of the documents, per source."),
        ("funnels", "Pipeline funnel of each source", _funnels_section(data, colours),
         "Rows left after each stage of the pipeline run the source's documents come from."),
    ]
    body = "".join(H.section(a, t, b, n) for a, t, b, n in sections)
    return H.page(f"smelter mixture report: {mx['name']}", f"Mixture report \u2014 {mx['name']}", meta,
                  [(a, t) for a, t, _, _ in sections], body)


# ---------------------------------------------------------------- Markdown / JSON


def render_markdown(data: dict) -> str:
    """The mixture's figures as Markdown tables."""
    mx, sm = data["mixture"], data["summary"]
    out = [f"# Mixture report: {mx['name']}", "",
           f"config `{mx['config_hash']}`: {sm['tokens']:,} training tokens ({sm['samples']:,} samples of "
           f"{sm['seq_len']}), budget {sm['budget_tokens']:,}, {sm['phases']} phases, seed {sm['seed']}", "",
           "## Sources", "",
           _md_table(["source", "documents", "tokens", "tokens drawn", "share", "epochs", "max epochs"],
                     [[n, s["documents"], s["tokens"], s["tokens_drawn"], pct(s["share"]), s["epochs"], s["max_epochs"]]
                      for n, s in data["sources"].items()]),
           "", "## Curriculum", "",
           _md_table(["phase", "first token", "end token", "tokens", "samples"] + list(data["sources"]),
                     [[p["name"], p["first_token"], p["end_token"], p["tokens"], p["samples"]]
                      + [(f"{p['sources'][n]['tokens']:,} ({pct(p['sources'][n]['token_share'])}, "
                          f"{p['sources'][n]['epochs']} ep)" if n in p["sources"] else "")
                         for n in data["sources"]] for p in data["phases"]])]
    for p in data["phases"]:
        q = p["quality"]
        if q:
            e = q["edges"]
            out += ["", f"## Quality of {p['name']} (tokens drawn)", "",
                    _md_table(["quality_score", "tokens"],
                              [[f"{e[k]:.2f}-{e[k + 1]:.2f}", q["tokens"][k]] for k in range(len(e) - 1)])]
    for name, s in data["sources"].items():
        run = s["run"]
        out += ["", f"## Funnel of {name} (pipeline {run['pipeline']}, {run['name']})", ""]
        if run["stats_found"]:
            out.append(_md_table(["stage", "rows in", "dropped", "rows out"],
                                 [[f["stage"], f["rows_in"], f["dropped"], f["rows_out"]] for f in run["funnel"]]))
        else:
            out.append(str(run.get("problem")))
    return "\n".join(out) + "\n"


def render_json(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_mixture_report(plan_dir: str | os.PathLike, output: str | None = None) -> str:
    """Build the mixture's report and write ``PLAN_DIR/mixture.html`` (or ``output``); returns the path."""
    plan_dir = os.fspath(plan_dir)
    data = build_mixture_report(plan_dir)
    path = output or os.path.join(plan_dir, "mixture.html")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(render_html(data))
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{path}: cannot write the report: {e.strerror}") from None
    return path
