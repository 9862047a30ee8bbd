"""The audit report of one pipeline run: ``RUN_DIR/report.html`` (and the same figures as JSON or Markdown).

:func:`build_run_report` gathers every figure into one JSON-serialisable dict:

* the funnel of each source: rows read, what the reader skipped, rows in and out of every row step, then
  what each global step (exact / MinHash dedup) removed from the source, down to the rows kept;
* drops by rule (step, reason, count) with the stats.json path of every count;
* the language distribution of the kept documents (the shards' ``lang`` column) and the langid step's drops;
* histograms of document length in characters, kept (``utf8_length`` of the shards' ``text``) and dropped
  (the ledger's ``length``), and of the kept documents' ``quality_score``;
* the dedup steps: drops per source, duplicate groups, cluster-size histogram, largest clusters;
* a few kept documents (the first row of the first non-empty shards) and dropped ones (ledger/samples.json);
* seconds per step.

Only the columns a figure needs are read, batch by batch, from memory-mapped Arrow IPC files; every count
is an Arrow or NumPy kernel, never a Python loop over rows, so a million-row run takes seconds.
The dict is deterministic (no timestamps, no absolute paths; written with sorted keys).
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixtures.reports import html as H
from pipelines.errors import UserError

SCHEMA_VERSION = 1
SEP = " \u00b7 "

#: lower bounds of the length bins (characters); bin i is [edges[i], edges[i+1]), the last is open
LENGTH_EDGES = [0, 1, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
                200_000, 500_000, 1_000_000]
#: quality_score bin edges: 20 bins of 0.05 over [0, 1]; bin i is [edges[i], edges[i+1]), the last closed
QUALITY_EDGES = [round(i / 20, 2) for i in range(21)]
#: kept documents shown per source, and dropped documents per (step, reason) / per source
KEPT_EXAMPLES = 3
DROPPED_PER_REASON = 1
DROPPED_EXAMPLES = 16
#: characters of text shown per example
EXAMPLE_CHARS = 300
#: languages shown per source (the JSON keeps them all)
TOP_LANGUAGES = 15
#: threads that read shards at once (each decompresses and counts one file)
SCAN_THREADS = min(8, os.cpu_count() or 1)
#: the dedup summary figures copied from stats.json when a global step has them
DEDUP_FIGURES = ("duplicate_groups", "components", "nodes", "redundant_nodes", "edges", "documents_signed",
                 "documents_too_short", "bands", "rows", "component_rounds")
#: the order of components_stats' size buckets
SIZE_BUCKETS = ["1", "2", "3-5", "6-10", "11-100", ">100"]


# ---------------------------------------------------------------- reading


def load_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: no {what}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read {what}: {e}") from None


def _files(run_dir: str, manifest: dict | None, key: str) -> dict[str, list[str]]:
    """Shard (``key="shards"``) or ledger files per source, in part order: from manifest.json, else a glob."""
    out: dict[str, list[str]] = {}
    if manifest and isinstance(manifest.get(key), list):
        for entry in manifest[key]:
            out.setdefault(entry["source"], []).append(os.path.join(run_dir, entry["path"]))
    else:
        for p in glob.glob(os.path.join(run_dir, key, "*", "part-*.arrow")):
            out.setdefault(os.path.basename(os.path.dirname(p)), []).append(p)
    return {s: sorted(paths) for s, paths in out.items()}


def iter_columns(path: str, columns: list[str]):
    """Yield (batch, present column names) for the batches of one IPC file, reading only ``columns``.

    The file is memory-mapped and only the chosen fields are decompressed (IpcReadOptions.included_fields),
    so a column never asked for costs nothing."""
    with pa.memory_map(path) as source:
        schema = pa.ipc.open_file(source).schema
        present = [c for c in columns if schema.get_field_index(c) >= 0]
        if not present:
            return
        options = pa.ipc.IpcReadOptions(included_fields=[schema.get_field_index(c) for c in present])
        reader = pa.ipc.open_file(source, options=options)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i), present


def bin_index(values: np.ndarray, edges: list[float], closed_last: bool) -> np.ndarray:
    """The bin of every value: bin i holds [edges[i], edges[i+1]); with ``closed_last`` the edges are both
    ends and the last bin also holds its upper edge (values beyond either end go to the end bins)."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right") - 1
    nbins = len(edges) - 1 if closed_last else len(edges)
    return np.clip(idx, 0, nbins - 1)


def count_bins(values: np.ndarray, edges: list[float], closed_last: bool) -> np.ndarray:
    nbins = len(edges) - 1 if closed_last else len(edges)
    if values.size == 0:
        return np.zeros(nbins, dtype=np.int64)
    return np.bincount(bin_index(values, edges, closed_last), minlength=nbins).astype(np.int64)


def length_labels() -> list[str]:
    """Readable labels of the length bins: ``0``, ``1-9``, ..., ``1M+``."""
    out = []
    for i, lo in enumerate(LENGTH_EDGES):
        if i + 1 == len(LENGTH_EDGES):
            out.append(f"{H.short(lo)}+")
        elif LENGTH_EDGES[i + 1] - lo == 1:
            out.append(H.short(lo))
        else:
            out.append(f"{H.short(lo)}\u2013{H.short(LENGTH_EDGES[i + 1] - 1)}")
    return out


def quality_labels() -> list[str]:
    return [f"{QUALITY_EDGES[i]:.2f}\u2013{QUALITY_EDGES[i + 1]:.2f}" for i in range(len(QUALITY_EDGES) - 1)]


@dataclass
class Tally:
    """What one or more files add up to: rows, characters, length and quality histograms, languages."""

    rows: int = 0
    chars: int = 0
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(len(LENGTH_EDGES), dtype=np.int64))
    quality: np.ndarray = field(default_factory=lambda: np.zeros(len(QUALITY_EDGES) - 1, dtype=np.int64))
    q_missing: int = 0
    q_sum: float = 0.0
    langs: Counter = field(default_factory=Counter)
    has: set = field(default_factory=set)

    def add(self, other: Tally) -> None:
        self.rows += other.rows
        self.chars += other.chars
        self.lengths += other.lengths
        self.quality += other.quality
        self.q_missing += other.q_missing
        self.q_sum += other.q_sum
        self.langs.update(other.langs)
        self.has |= other.has


def tally_shard(path: str) -> Tally:
    """One shard's figures: ``utf8_length`` of ``text`` (characters), ``lang`` (or ``language``) value
    counts, the ``quality_score`` histogram; NumPy/Arrow kernels per batch, no loop over rows."""
    t = Tally()
    for batch, present in iter_columns(path, ["text", "lang", "language", "quality_score"]):
        t.has.update(present)
        t.rows += batch.num_rows
        if "text" in present:
            n = pc.fill_null(pc.utf8_length(batch.column("text")), 0).to_numpy(zero_copy_only=False)
            t.chars += int(n.sum())
            t.lengths += count_bins(n, LENGTH_EDGES, closed_last=False)
        lang_col = "lang" if "lang" in present else "language" if "language" in present else None
        if lang_col:
            vc = pc.value_counts(pc.fill_null(batch.column(lang_col).cast(pa.string()), "(none)"))
            t.langs.update(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)))
        if "quality_score" in present:
            q = batch.column("quality_score").cast(pa.float64())
            q = pc.if_else(pc.is_nan(q), None, q)
            t.q_missing += q.null_count
            valid = pc.drop_null(q).to_numpy(zero_copy_only=False)
            t.q_sum += float(valid.sum())
            t.quality += count_bins(valid, QUALITY_EDGES, closed_last=True)
    return t


def tally_ledger(path: str) -> Tally:
    """One ledger file's rows and length histogram (its ``length`` column, characters)."""
    t = Tally()
    for batch, _ in iter_columns(path, ["length"]):
        t.rows += batch.num_rows
        n = pc.fill_null(batch.column("length"), 0).to_numpy(zero_copy_only=False)
        t.chars += int(n.sum())
        t.lengths += count_bins(n, LENGTH_EDGES, closed_last=False)
    return t


def _tally_all(fn, paths: list[str]) -> Tally:
    """``fn`` over the files on a few threads (decompression and the kernels release the GIL), summed in
    file order so that the result never depends on the threads."""
    total = Tally()
    if len(paths) <= 1:
        for p in paths:
            total.add(fn(p))
        return total
    with ThreadPoolExecutor(max_workers=min(SCAN_THREADS, len(paths))) as pool:
        for t in pool.map(fn, paths):
            total.add(t)
    return total


def scan_kept(paths: list[str]) -> dict[str, Any]:
    """Rows, characters, length histogram, languages and quality histogram of a source's shards."""
    t = _tally_all(tally_shard, paths)
    lang_column = "lang" if "lang" in t.has else "language" if "language" in t.has else None
    scored = int(t.quality.sum())
    text = "text" in t.has
    return {
        "rows": t.rows, "chars": t.chars if text else None,
        "mean_chars": round(t.chars / t.rows, 1) if t.rows and text else None,
        "lengths": t.lengths.tolist() if text else None,
        "languages": ({"column": lang_column, "counts": dict(t.langs)} if lang_column else None),
        "quality": ({"counts": t.quality.tolist(), "missing": t.q_missing,
                     "mean": round(t.q_sum / scored, 4) if scored else None}
                    if "quality_score" in t.has else None),
    }


def scan_ledger(paths: list[str]) -> dict[str, Any]:
    """Rows and the length histogram of a source's dropped documents (the ledger's ``length`` column)."""
    t = _tally_all(tally_ledger, paths)
    return {"rows": t.rows, "chars": t.chars, "lengths": t.lengths.tolist()}


def kept_examples(paths: list[str], n: int = KEPT_EXAMPLES) -> list[dict[str, Any]]:
    """The first document of each of the first ``n`` non-empty shards: id, url or path, length, the
    first characters of its text and, when the run has them, language and quality score."""
    out: list[dict[str, Any]] = []
    for path in paths:
        if len(out) >= n:
            break
        for batch, present in iter_columns(path, ["id", "url", "path", "text", "lang", "quality_score"]):
            if batch.num_rows == 0:
                continue
            row = batch.slice(0, 1)
            ex: dict[str, Any] = {"id": row.column("id")[0].as_py() if "id" in present else None}
            for c in ("url", "path", "lang"):
                if c in present and row.column(c)[0].is_valid:
                    ex[c] = row.column(c)[0].as_py()
            if "quality_score" in present and row.column("quality_score")[0].is_valid:
                ex["quality_score"] = round(float(row.column("quality_score")[0].as_py()), 4)
            if "text" in present:
                text = row.column("text")
                ex["length"] = int(pc.fill_null(pc.utf8_length(text), 0)[0].as_py())
                ex["text_head"] = pc.utf8_slice_codeunits(text, 0, EXAMPLE_CHARS)[0].as_py()
            out.append(ex)
            break
    return out


def dropped_examples(samples: dict[str, list[dict]], order: list[str]) -> list[dict[str, Any]]:
    """Up to :data:`DROPPED_PER_REASON` sampled documents per (step, reason), in pipeline order."""
    rank = {s: i for i, s in enumerate(order)}
    keys = sorted(samples, key=lambda k: (rank.get(k.split(":", 1)[0], len(rank)), k))
    out = []
    for key in keys:
        step, _, reason = key.partition(":")
        for s in samples[key][:DROPPED_PER_REASON]:
            ex = {"step": step, "reason": reason}
            ex.update({k: v for k, v in s.items() if k in ("id", "url", "path", "detail", "dup_of", "length")})
            if s.get("text_head"):
                ex["text_head"] = s["text_head"][:EXAMPLE_CHARS]
            out.append(ex)
    return out[:DROPPED_EXAMPLES]


# ---------------------------------------------------------------- the figures


def _drops_total(drops: dict | None) -> int:
    return int(sum((drops or {}).values()))


def source_funnel(name: str, s: dict, global_steps: list[dict]) -> list[dict[str, Any]]:
    """Stages of one source: the reader, every row step, every global step; rows in, dropped, rows out.

    ``stats_path`` names the stats.json object a stage's figures come from."""
    reader = s.get("reader") or {}
    read = int(s.get("rows_read", 0))
    skipped = _drops_total(reader.get("drops"))
    stages = [{"stage": f"read ({reader['name']})" if reader.get("name") else "read", "kind": "reader",
               "rows_in": read, "dropped": skipped, "rows_out": read - skipped,
               "stats_path": H.path("sources", name, "reader")}]
    rows = read - skipped
    for i, st in enumerate(s.get("steps", [])):
        stages.append({"stage": st["step"], "kind": "step", "rows_in": int(st["rows_in"]),
                       "dropped": int(st["rows_in"]) - int(st["rows_out"]), "rows_out": int(st["rows_out"]),
                       "stats_path": H.path("sources", name, "steps", i)})
        rows = int(st["rows_out"])
    for j, g in enumerate(global_steps):
        dropped = _drops_total((g.get("drops") or {}).get(name))
        stages.append({"stage": g["step"], "kind": "global", "rows_in": rows, "dropped": dropped,
                       "rows_out": rows - dropped, "stats_path": H.path("global_steps", j)})
        rows -= dropped
    return stages


def drops_by_rule(name: str, s: dict, global_steps: list[dict]) -> list[dict[str, Any]]:
    """One entry per (step, reason) that dropped documents of this source, in pipeline order."""
    out = []
    reader = s.get("reader") or {}
    for reason, n in sorted((reader.get("drops") or {}).items()):
        out.append({"step": reader.get("name", "read"), "kind": "reader", "reason": reason, "count": int(n),
                    "stats_path": H.path("sources", name, "reader", "drops", reason)})
    for i, st in enumerate(s.get("steps", [])):
        for reason, n in sorted((st.get("drops") or {}).items()):
            out.append({"step": st["step"], "kind": "step", "reason": reason, "count": int(n),
                        "stats_path": H.path("sources", name, "steps", i, "drops", reason)})
    for j, g in enumerate(global_steps):
        for reason, n in sorted(((g.get("drops") or {}).get(name) or {}).items()):
            out.append({"step": g["step"], "kind": "global", "reason": reason, "count": int(n),
                        "stats_path": H.path("global_steps", j, "drops", name, reason)})
    return out


def seconds_per_step(name: str, s: dict) -> list[dict[str, Any]]:
    out = []
    reader = s.get("reader") or {}
    if "seconds" in reader:
        out.append({"stage": f"read ({reader.get('name', '')})", "seconds": reader["seconds"],
                    "stats_path": H.path("sources", name, "reader", "seconds")})
    for i, st in enumerate(s.get("steps", [])):
        if "seconds" in st:
            out.append({"stage": st["step"], "seconds": st["seconds"],
                        "stats_path": H.path("sources", name, "steps", i, "seconds")})
    return out


def dedup_summary(global_steps: list[dict]) -> list[dict[str, Any]]:
    """The figures of each global step: drops per source, cluster counts and sizes, the largest clusters."""
    out = []
    for j, g in enumerate(global_steps):
        entry: dict[str, Any] = {"index": j, "step": g.get("step"), "rows_in": g.get("rows_in"),
                                 "rows_out": g.get("rows_out"), "seconds": g.get("seconds"),
                                 "drops": {src: {r: int(n) for r, n in d.items()}
                                           for src, d in (g.get("drops") or {}).items()},
                                 "figures": {k: g[k] for k in DEDUP_FIGURES if isinstance(g.get(k), int | float)}}
        hist = g.get("size_histogram")
        if isinstance(hist, dict):
            keys = [k for k in SIZE_BUCKETS if k in hist] + sorted(k for k in hist if k not in SIZE_BUCKETS)
            entry["size_histogram"] = [{"size": k, "clusters": int(hist[k])} for k in keys]
        if isinstance(g.get("largest"), list):
            entry["largest"] = [{"component": c.get("component"), "size": c.get("size"),
                                 "members": [{k: m.get(k) for k in ("id", "source", "kept", "length")}
                                             for m in c.get("members") or []]}
                                for c in g["largest"]]
        out.append(entry)
    return out


def _sorted(obj: Any) -> Any:
    """The same structure with every dict's keys in sorted order (deterministic JSON and iteration)."""
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted(v) for v in obj]
    return obj


def build_run_report(run_dir: str | os.PathLike) -> dict[str, Any]:
    """All figures of the run's report (see the module docstring); JSON-serialisable and deterministic."""
    run_dir = os.fspath(run_dir)
    stats_path = os.path.join(run_dir, "stats.json")
    if not os.path.isfile(stats_path):
        raise UserError(f"{run_dir}: not a pipeline run folder (no stats.json)")
    stats = load_json(stats_path, "run stats")
    if not isinstance(stats, dict) or not isinstance(stats.get("sources"), dict):
        raise UserError(f"{stats_path}: not a smelter stats.json (no 'sources')")
    manifest_path = os.path.join(run_dir, "manifest.json")
    manifest = load_json(manifest_path, "manifest") if os.path.isfile(manifest_path) else None
    samples_path = os.path.join(run_dir, "ledger", "samples.json")
    samples = load_json(samples_path, "ledger samples") if os.path.isfile(samples_path) else {}
    global_steps = stats.get("global_steps") or []
    shard_files = _files(run_dir, manifest, "shards")
    ledger_files = _files(run_dir, manifest, "ledger")

    sources: dict[str, Any] = {}
    for name in sorted(stats["sources"]):
        s = stats["sources"][name]
        funnel = source_funnel(name, s, global_steps)
        kept = scan_kept(shard_files.get(name, []))
        dropped = scan_ledger(ledger_files.get(name, []))
        langid = [{"step": st["step"], "reason": r, "count": int(n),
                   "stats_path": H.path("sources", name, "steps", i, "drops", r)}
                  for i, st in enumerate(s.get("steps", [])) if st.get("step") == "langid"
                  for r, n in sorted((st.get("drops") or {}).items())]
        order = [(s.get("reader") or {}).get("name", "")] + [st["step"] for st in s.get("steps", [])] + \
                [g.get("step") for g in global_steps]
        rows_read, rows_kept = int(s.get("rows_read", 0)), int(s.get("rows_kept", 0))
        sources[name] = {
            "rows_read": rows_read, "rows_kept": rows_kept, "rows_dropped": int(s.get("rows_dropped", 0)),
            "kept_share": round(rows_kept / rows_read, 6) if rows_read else None,
            "input_files": s.get("input_files"), "errors": len(s.get("errors") or []),
            "error_samples": [str(e)[:300] for e in (s.get("errors") or [])[:10]],
            "task_seconds": s.get("task_seconds"),
            "shards": len(shard_files.get(name, [])),
            "shard_bytes": sum(e.get("bytes", 0) for e in (manifest or {}).get("shards", [])
                               if e.get("source") == name),
            "funnel": funnel, "drops": drops_by_rule(name, s, global_steps),
            "kept": kept, "dropped": dropped,
            "languages": ({"column": (kept["languages"] or {}).get("column", "lang"),
                           "kept": (kept["languages"] or {}).get("counts", {}), "langid_drops": langid}
                          if kept["languages"] or langid else None),
            "examples": {"kept": kept_examples(shard_files.get(name, [])),
                         "dropped": dropped_examples(samples.get(name) or {}, order)},
            "seconds": seconds_per_step(name, s),
            # the audit invariants: the funnel ends at the rows kept; shards + ledger hold every row read
            "checks": {"funnel_ends_at_rows_kept": funnel[-1]["rows_out"] == rows_kept,
                       "shard_rows_equal_rows_kept": kept["rows"] == rows_kept,
                       "shards_plus_ledger_equal_rows_read": kept["rows"] + dropped["rows"] == rows_read},
        }
    for s in sources.values():
        del s["kept"]["languages"]  # moved to s["languages"]
    total_read = int(stats.get("rows_read", 0))
    report = {
        "kind": "smelter-run-report", "schema_version": SCHEMA_VERSION,
        "run": {"name": os.path.basename(os.path.abspath(run_dir)), "pipeline": stats.get("pipeline"),
                "config_hash": stats.get("config_hash"), "stats_schema_version": stats.get("schema_version")},
        "summary": {"rows_read": total_read, "rows_kept": int(stats.get("rows_kept", 0)),
                    "rows_dropped": int(stats.get("rows_dropped", 0)),
                    "kept_share": round(int(stats.get("rows_kept", 0)) / total_read, 6) if total_read else None,
                    "input_files": stats.get("input_files"), "input_files_resumed": stats.get("input_files_resumed"),
                    "seconds": stats.get("seconds"), "spark_seconds": stats.get("spark_seconds"),
                    "sources": len(sources)},
        "bins": {"length_edges": LENGTH_EDGES, "length_labels": length_labels(),
                 "quality_edges": QUALITY_EDGES, "quality_labels": quality_labels()},
        "sources": sources,
        "dedup": dedup_summary(global_steps),
    }
    return _sorted(report)


# ---------------------------------------------------------------- HTML


def _source_table(data: dict, colours: dict[str, str]) -> str:
    rows = []
    for name, s in data["sources"].items():
        st = H.path("sources", name)
        rows.append([f"{H.swatch(colours[name])}{H.esc(name)}",
                     H.cell(s["input_files"], "stats", H.path(st, "input_files")),
                     H.cell(s["rows_read"], "stats", H.path(st, "rows_read")),
                     H.cell(s["rows_kept"], "stats", H.path(st, "rows_kept")),
                     H.cell(s["rows_dropped"], "stats", H.path(st, "rows_dropped")),
                     H.cell(s["kept_share"], "report", H.path(st, "kept_share"), "pct", 1),
                     H.cell(s["shards"], "report", H.path(st, "shards")),
                     H.cell(s["kept"]["chars"], "report", H.path(st, "kept", "chars")),
                     H.cell(s["errors"], "report", H.path(st, "errors")),
                     H.cell(s["task_seconds"], "stats", H.path(st, "task_seconds"), "sec", 2)])
    sm = data["summary"]
    total = ["all", H.cell(sm["input_files"], "stats", "input_files"), H.cell(sm["rows_read"], "stats", "rows_read"),
             H.cell(sm["rows_kept"], "stats", "rows_kept"), H.cell(sm["rows_dropped"], "stats", "rows_dropped"),
             H.cell(sm["kept_share"], "report", "summary.kept_share", "pct", 1), "", "", "",
             H.cell(sm["seconds"], "stats", "seconds", "sec", 2)]
    return H.table(["source", "input files", "rows read", "kept", "dropped", "kept %", "shards", "kept chars",
                    "errors", "task seconds"], rows, [False] + [True] * 9, total)


def _funnel_section(data: dict, colours: dict[str, str]) -> str:
    out = []
    for name, s in data["sources"].items():
        base = H.path("sources", name, "funnel")
        bars = [H.Bar(f"{st['stage']}", st["rows_out"], colours[name], "report", H.path(base, i, "rows_out"))
                for i, st in enumerate(s["funnel"])]
        out.append(f'<div class="grid"><div>{H.funnel_chart(bars, f"{name}: rows left after each stage", width=540)}</div>')
        rows = []
        for i, st in enumerate(s["funnel"]):
            sp, rp = st["stats_path"], H.path(base, i)
            if st["kind"] == "step":
                cells = [H.cell(st["rows_in"], "stats", H.path(sp, "rows_in")),
                         H.cell(st["dropped"], "report", H.path(rp, "dropped")),
                         H.cell(st["rows_out"], "stats", H.path(sp, "rows_out"))]
            elif st["kind"] == "reader":
                cells = [H.cell(st["rows_in"], "stats", H.path("sources", name, "rows_read")),
                         H.cell(st["dropped"], "report", H.path(rp, "dropped")),
                         H.cell(st["rows_out"], "report", H.path(rp, "rows_out"))]
            else:
                cells = [H.cell(st["rows_in"], "report", H.path(rp, "rows_in")),
                         H.cell(st["dropped"], "report", H.path(rp, "dropped")),
                         H.cell(st["rows_out"], "report", H.path(rp, "rows_out"))]
            rows.append([H.esc(st["stage"]), H.esc(st["kind"]), *cells])
        rows.append(["kept", "", "", "", H.cell(s["rows_kept"], "stats", H.path("sources", name, "rows_kept"))])
        out.append("<div>" + H.table(["stage", "kind", "rows in", "dropped", "rows out"], rows,
                                     [False, False, True, True, True]) + "</div></div>")
    return "".join(out)


def _drops_section(data: dict, colours: dict[str, str]) -> str:
    out = ['<div class="grid">']
    for name, s in data["sources"].items():
        if not s["drops"]:
            out.append(f'<div class="card"><b>{H.esc(name)}</b>: nothing dropped.</div>')
            continue
        order = sorted(range(len(s["drops"])), key=lambda i: (-s["drops"][i]["count"], i))
        bars = [H.Bar(f"{s['drops'][i]['step']} \u00b7 {s['drops'][i]['reason']}", s["drops"][i]["count"],
                      colours[name], "stats", s["drops"][i]["stats_path"]) for i in order]
        out.append(f"<div>{H.hbar_chart(bars, f'{name}: documents dropped by rule', width=540)}</div>")
    out.append("</div>")
    return "".join(out)


def _languages_section(data: dict, colours: dict[str, str]) -> str:
    out = []
    for name, s in data["sources"].items():
        lang = s["languages"]
        if not lang:
            continue
        kept = sorted(lang["kept"].items(), key=lambda kv: (-kv[1], kv[0]))
        what = "language" if lang["column"] == "lang" else f"`{lang['column']}`"
        bars = [H.Bar(k, v, colours[name], "report", H.path("sources", name, "languages", "kept", k))
                for k, v in kept[:TOP_LANGUAGES]]
        chart = H.hbar_chart(bars, f"{name}: kept documents by {what}", width=480, label_width=150)
        more = '<p class="note">More in the JSON report.</p>' if len(kept) > TOP_LANGUAGES else ""
        drops = ""
        if lang["langid_drops"]:
            drops = "<h3>langid drops</h3>" + H.table(
                ["reason", "documents"],
                [[H.esc(d["reason"]), H.cell(d["count"], "stats", d["stats_path"])] for d in lang["langid_drops"]],
                [False, True])
        out.append(f'<div class="grid"><div>{chart}{more}</div><div>{drops}</div></div>')
    return "".join(out) or '<p class="note">No source has a language column.</p>'


def _histogram_table(labels: list[str], series: list[tuple[str, list[int], str]], lo: int, hi: int) -> str:
    rows = [[H.esc(labels[i])] + [H.cell(counts[i], "report", H.path(p, i)) for _, counts, p in series]
            for i in range(lo, hi)]
    return "<details><summary>the counts</summary>" + H.table(
        ["bin"] + [n for n, _, _ in series], rows, [False] + [True] * len(series)) + "</details>"


def _nonzero_range(*counts: list[int]) -> tuple[int, int]:
    idx = [i for c in counts if c for i, v in enumerate(c) if v]
    return (min(idx), max(idx) + 1) if idx else (0, 0)


def _lengths_section(data: dict) -> str:
    labels = data["bins"]["length_labels"]
    out = ['<div class="grid">']
    for name, s in data["sources"].items():
        kept, dropped = s["kept"]["lengths"], s["dropped"]["lengths"]
        lo, hi = _nonzero_range(kept or [], dropped)
        if hi == 0:
            continue
        series = []
        if kept:
            series.append(("kept", kept, H.path("sources", name, "kept", "lengths")))
        series.append(("dropped", dropped, H.path("sources", name, "dropped", "lengths")))
        chart = H.histogram(labels[lo:hi], [H.Series(n, c[lo:hi], H.KEPT_COLOUR if n == "kept" else H.DROPPED_COLOUR)
                                            for n, c, _ in series],
                            f"{name}: document length (characters)", width=540)
        mean = ""
        if s["kept"]["mean_chars"] is not None:
            mean = (f'<p class="note">mean kept length {H.fig(s["kept"]["mean_chars"], "report", H.path("sources", name, "kept", "mean_chars"), "float", 1)} characters</p>')
        out.append(f"<div>{chart}{mean}{_histogram_table(labels, series, lo, hi)}</div>")
    out.append("</div>")
    return "".join(out)


def _quality_section(data: dict, colours: dict[str, str]) -> str:
    labels = data["bins"]["quality_labels"]
    out = ['<div class="grid">']
    for name, s in data["sources"].items():
        q = s["kept"]["quality"]
        if not q:
            continue
        p = H.path("sources", name, "kept", "quality", "counts")
        chart = H.histogram(labels, [H.Series("kept", q["counts"], colours[name])],
                            f"{name}: quality_score of kept documents", width=540)
        note = (f'<p class="note">mean {H.fig(q["mean"], "report", H.path("sources", name, "kept", "quality", "mean"), "float", 3)}'
                f', missing {H.fig(q["missing"], "report", H.path("sources", name, "kept", "quality", "missing"))}</p>')
        out.append(f"<div>{chart}{note}{_histogram_table(labels, [('kept', q['counts'], p)], 0, len(labels))}</div>")
    out.append("</div>")
    return "".join(out) if len(out) > 2 else '<p class="note">No source has a quality_score column.</p>'


def _dedup_section(data: dict, colours: dict[str, str]) -> str:
    if not data["dedup"]:
        return '<p class="note">This pipeline has no global (dedup) steps.</p>'
    out = []
    for d in data["dedup"]:
        j = d["index"]
        g = H.path("global_steps", j)
        out.append(f"<h3>{H.esc(d['step'])}</h3>")
        figs = [("rows in", H.fig(d["rows_in"], "stats", H.path(g, "rows_in"))),
                ("rows out", H.fig(d["rows_out"], "stats", H.path(g, "rows_out"))),
                ("seconds", H.fig(d["seconds"], "stats", H.path(g, "seconds"), "sec", 2))]
        figs += [(k.replace("_", " "), H.fig(v, "stats", H.path(g, k))) for k, v in d["figures"].items()]
        out.append(H.kpis(figs))
        rows = [[f"{H.swatch(colours.get(src, H.NEUTRAL_COLOUR))}{H.esc(src)}", H.esc(reason),
                 H.cell(n, "stats", H.path(g, "drops", src, reason))]
                for src, reasons in d["drops"].items() for reason, n in reasons.items()]
        parts = []
        if rows:
            parts.append("<div>" + H.table(["source", "reason", "documents"], rows, [False, False, True]) + "</div>")
        if d.get("size_histogram"):
            bars = [H.Bar(f"size {b['size']}", b["clusters"], H.NEUTRAL_COLOUR, "stats",
                          H.path(g, "size_histogram", b["size"])) for b in d["size_histogram"]]
            parts.append("<div>" + H.hbar_chart(bars, f"{d['step']}: clusters by size", width=460, label_width=110)
                         + "</div>")
        out.append('<div class="grid">' + "".join(parts) + "</div>")
        if d.get("largest"):
            lrows = []
            for k, c in enumerate(d["largest"][:10]):
                members = ", ".join(
                    f"{H.esc(m['id'])}{' (kept)' if m.get('kept') else ''}" for m in c["members"][:5])
                lrows.append([f"<code>{H.esc(c['component'])}</code>",
                              H.cell(c["size"], "stats", H.path(g, "largest", k, "size")),
                              f"<code>{members}</code>" if members else ""])
            out.append("<h3>largest clusters</h3>" + H.table(["cluster", "size", "members (sample)"], lrows,
                                                             [False, True, False]))
    return "".join(out)


def _examples_section(data: dict) -> str:
    out = []
    for name, s in data["sources"].items():
        out.append(f"<h3>{H.esc(name)}</h3>")
        ex = s["examples"]
        for k, e in enumerate(ex["kept"]):
            where = e.get("url") or e.get("path") or ""
            extra = []
            if e.get("length") is not None:
                extra.append(H.fig(e["length"], "report", H.path("sources", name, "examples", "kept", k, "length"))
                             + " chars")
            if e.get("lang"):
                extra.append(H.esc(e["lang"]))
            if e.get("quality_score") is not None:
                extra.append("quality " + H.fig(e["quality_score"], "report",
                                                H.path("sources", name, "examples", "kept", k, "quality_score"),
                                                "float", 3))
            out.append(f'<div class="example kept"><div class="head"><b>kept</b> <code>{H.esc(e.get("id"))}</code> '
                       f'{H.esc(where)} \u00b7 {SEP.join(extra)}</div>'
                       f'<pre>{H.esc(e.get("text_head") or "")}</pre></div>')
        for k, e in enumerate(ex["dropped"]):
            where = e.get("url") or e.get("path") or ""
            info = [f"<b>{H.esc(e['step'])}: {H.esc(e['reason'])}</b>", f"<code>{H.esc(e.get('id'))}</code>",
                    H.esc(where)]
            if e.get("length") is not None:
                info.append(H.fig(e["length"], "report", H.path("sources", name, "examples", "dropped", k, "length"))
                            + " chars")
            if e.get("detail"):
                info.append(H.esc(e["detail"]))
            if e.get("dup_of"):
                info.append(f"duplicate of <code>{H.esc(e['dup_of'])}</code>")
            text = f'<pre>{H.esc(e["text_head"])}</pre>' if e.get("text_head") else ""
            out.append(f'<div class="example dropped"><div class="head">{SEP.join(info)}</div>{text}</div>')
        if not ex["kept"] and not ex["dropped"]:
            out.append('<p class="note">No examples.</p>')
    return "".join(out)


def _seconds_section(data: dict, colours: dict[str, str]) -> str:
    bars = []
    for name, s in data["sources"].items():
        bars += [H.Bar(f"{name} \u00b7 {e['stage']}", e["seconds"], colours[name], "stats", e["stats_path"],
                       "sec", 2) for e in s["seconds"]]
    bars += [H.Bar(f"global \u00b7 {d['step']}", d["seconds"], H.NEUTRAL_COLOUR, "stats",
                   H.path("global_steps", d["index"], "seconds"), "sec", 2)
             for d in data["dedup"] if d.get("seconds") is not None]
    note = (f'<p class="note">Step seconds are summed over all tasks (they run in parallel); the whole run took '
            f'{H.fig(data["summary"]["seconds"], "stats", "seconds", "sec", 1)}.</p>')
    return note + H.hbar_chart(bars, "seconds per step", width=760, label_width=280)


def _errors_section(data: dict) -> str:
    rows = [[H.esc(name), H.esc(e)] for name, s in data["sources"].items() for e in s["error_samples"]]
    if not rows:
        return '<p class="note">No input errors.</p>'
    return H.table(["source", "error (first 10 per source)"], rows)


def render_html(data: dict) -> str:
    """The report page of :func:`build_run_report`'s figures."""
    H.reset_ids()
    colours = H.source_colours(data["sources"])
    run, sm = data["run"], data["summary"]
    meta = (f"pipeline <code>{H.esc(run['pipeline'])}</code> \u00b7 config <code>{H.esc(run['config_hash'])}</code>"
            f" \u00b7 folder <code>{H.esc(run['name'])}</code> \u00b7 "
            f"{H.fig(sm['sources'], 'report', 'summary.sources')} sources")
    top = H.kpis([("rows read", H.fig(sm["rows_read"], "stats", "rows_read")),
                  ("rows kept", H.fig(sm["rows_kept"], "stats", "rows_kept")),
                  ("rows dropped", H.fig(sm["rows_dropped"], "stats", "rows_dropped")),
                  ("kept", H.fig(sm["kept_share"], "report", "summary.kept_share", "pct", 1)),
                  ("input files", H.fig(sm["input_files"], "stats", "input_files")),
                  ("seconds", H.fig(sm["seconds"], "stats", "seconds", "sec", 1))])
    failed = [f"{name}: {k.replace('_', ' ')}" for name, s in data["sources"].items()
              for k, ok in s["checks"].items() if not ok]
    checks = ('<p class="note">Checks: every funnel ends at the rows kept; shards + ledger hold every row read.'
              + (" <b>Failed: " + H.esc("; ".join(failed)) + "</b>" if failed else " All pass.") + "</p>")
    sections = [
        ("summary", "Summary", top + checks + _source_table(data, colours), None),
        ("funnel", "Funnel per source and step", _funnel_section(data, colours),
         "Rows entering and leaving every stage: the reader's skips, each row step, then each global step."),
        ("drops", "Drops by rule", _drops_section(data, colours), None),
        ("languages", "Languages", _languages_section(data, colours),
         "Kept documents by the language column of the shards, and what the langid step dropped."),
        ("lengths", "Document length", _lengths_section(data),
         "Characters per document: kept (the shards' text) and dropped (the ledger's length; 0 for rows "
         "skipped before they had text)."),
        ("quality", "Quality scores", _quality_section(data, colours), None),
        ("dedup", "Deduplication", _dedup_section(data, colours), None),
        ("examples", "Examples", _examples_section(data),
         "Kept: the first document of the first shards. Dropped: one sampled document per step and reason."),
        ("seconds", "Seconds per step", _seconds_section(data, colours), None),
        ("errors", "Input errors", _errors_section(data), None),
    ]
    body = "".join(H.section(a, t, b, n) for a, t, b, n in sections)
    return H.page(f"smelter run report: {run['pipeline']}", f"Run report \u2014 {run['pipeline']}", meta,
                  [(a, t) for a, t, _, _ in sections], body)


# ---------------------------------------------------------------- Markdown


def pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:.1f}%"


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    def c(v):
        if isinstance(v, bool) or v is None:
            return "" if v is None else str(v)
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:,.3f}".rstrip("0").rstrip(".")
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(c(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(data: dict) -> str:
    """The report's figures as Markdown tables, for CI logs and pull requests."""
    run, sm = data["run"], data["summary"]
    out = [f"# Run report: {run['pipeline']}", "",
           f"config `{run['config_hash']}`, folder `{run['name']}`: {sm['rows_read']:,} rows read, "
           f"{sm['rows_kept']:,} kept ({pct(sm['kept_share'])}), {sm['rows_dropped']:,} dropped, "
           f"{sm['seconds']} s", "",
           _md_table(["source", "input files", "rows read", "kept", "dropped", "kept %", "errors"],
                     [[n, s["input_files"], s["rows_read"], s["rows_kept"], s["rows_dropped"], pct(s["kept_share"]),
                       s["errors"]] for n, s in data["sources"].items()])]
    failed = [f"{n}: {k}" for n, s in data["sources"].items() for k, ok in s["checks"].items() if not ok]
    out += ["", "Checks: " + ("FAILED " + "; ".join(failed) if failed else "all pass")]
    for name, s in data["sources"].items():
        out += ["", f"## {name}", "", "### Funnel", "",
                _md_table(["stage", "kind", "rows in", "dropped", "rows out"],
                          [[f["stage"], f["kind"], f["rows_in"], f["dropped"], f["rows_out"]] for f in s["funnel"]])]
        if s["drops"]:
            out += ["", "### Drops by rule", "",
                    _md_table(["step", "reason", "documents"], [[d["step"], d["reason"], d["count"]] for d in s["drops"]])]
        if s["languages"] and s["languages"]["kept"]:
            kept = sorted(s["languages"]["kept"].items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_LANGUAGES]
            out += ["", f"### Languages (kept, `{s['languages']['column']}`)", "",
                    _md_table(["language", "documents"], [list(kv) for kv in kept])]
        lab = data["bins"]["length_labels"]
        kl, dl = s["kept"]["lengths"] or [0] * len(lab), s["dropped"]["lengths"]
        lo, hi = _nonzero_range(kl, dl)
        if hi:
            out += ["", "### Length (characters)", "",
                    _md_table(["bin", "kept", "dropped"], [[lab[i], kl[i], dl[i]] for i in range(lo, hi)])]
        q = s["kept"]["quality"]
        if q:
            ql = data["bins"]["quality_labels"]
            lo, hi = _nonzero_range(q["counts"])
            out += ["", f"### quality_score (kept; mean {q['mean']})", "",
                    _md_table(["bin", "kept"], [[ql[i], q["counts"][i]] for i in range(lo, hi)])]
        if s["seconds"]:
            out += ["", "### Seconds", "", _md_table(["stage", "seconds"], [[e["stage"], e["seconds"]] for e in s["seconds"]])]
    for d in data["dedup"]:
        out += ["", f"## {d['step']}", "",
                f"rows in {d['rows_in']:,}, rows out {d['rows_out']:,}, {d['seconds']} s; "
                + ", ".join(f"{k} {v:,}" for k, v in d["figures"].items())]
        rows = [[src, r, n] for src, rs in d["drops"].items() for r, n in rs.items()]
        if rows:
            out += ["", _md_table(["source", "reason", "documents"], rows)]
        if d.get("size_histogram"):
            out += ["", _md_table(["cluster size", "clusters"], [[b["size"], b["clusters"]] for b in d["size_histogram"]])]
    return "\n".join(out) + "\n"


def render_json(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write_run_report(run_dir: str | os.PathLike, fmt: str = "html", output: str | None = None) -> str:
    """Build the run's report and write it: ``RUN_DIR/report.html`` by default (or ``report.json`` /
    ``report.md``, or ``output``). Returns the path written."""
    data = build_run_report(run_dir)
    text = {"html": render_html, "json": render_json, "md": render_markdown}[fmt](data)
    path = output or os.path.join(os.fspath(run_dir), {"html": "report.html", "json": "report.json",
                                                       "md": "report.md"}[fmt])
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{path}: cannot write the report: {e.strerror}") from None
    return path
