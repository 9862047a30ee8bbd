"""Driver side of a run: list inputs, run the tasks on Spark, merge task records into the outputs.

Outputs (``out/<name>/``): ``shards/<source>/part-NNNNN.arrow``, ``ledger/<source>/part-NNNNN.arrow``,
``manifest.json``, ``stats.json``, ``ledger/samples.json``. ``_tasks/`` holds one record per finished
input file (what ``--resume`` trusts) and ``_progress/`` the live row counts the progress display reads.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import threading
import time
from typing import Any

from operators.writers import write_json_atomic
from pipelines.errors import UserError
from pipelines.global_stage import run_global, stage_dir
from pipelines.spec import SCHEMA_VERSION, PipelineSpec
from pipelines.task import Task, load_task_record

log = logging.getLogger(__name__)

#: what a fresh run clears from an existing output folder (nothing else there is touched)
OUTPUT_ENTRIES = ("shards", "ledger", "_tasks", "_progress", "_stage", "manifest.json", "stats.json",
                  "report.html")


def list_tasks(spec: PipelineSpec, base_dir: str = ".") -> list[Task]:
    """Every (source, input file) pair of the pipeline, in source then file order."""
    from operators import registry

    tasks = []
    for name, src in spec.sources.items():
        reader = registry.reader(src.read.name)(src.read.params)
        try:
            inputs = reader.list_inputs(base_dir)
        except FileNotFoundError as e:
            # a reader that knows the wrong key (commoncrawl: files[i], paths_file) starts its message with it
            key = "" if getattr(e, "key", None) else "paths: "
            raise UserError(f"{spec.origin}: sources.{name}.read.{src.read.name}.{key}{e}") from None
        tasks += [Task(source=name, input=f) for f in inputs]
    return tasks


def prepare_output(spec: PipelineSpec, out_dir: str, resume: bool) -> None:
    """Check a resumed run matches its config; clear a fresh run's previous outputs."""
    run_file = os.path.join(out_dir, "_tasks", "run.json")
    if resume and os.path.exists(run_file):
        with open(run_file) as fh:
            previous = json.load(fh)
        if previous.get("config_hash") != spec.config_hash():
            raise UserError(f"{out_dir}: cannot --resume: the pipeline changed since the interrupted run "
                            f"(config {previous.get('config_hash')} -> {spec.config_hash()}); run without --resume")
    elif not resume:
        for entry in OUTPUT_ENTRIES:
            p = os.path.join(out_dir, entry)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    for leftover in glob.glob(os.path.join(out_dir, "**", "*.tmp-*"), recursive=True):
        os.remove(leftover)  # torn files of killed tasks
    write_json_atomic(run_file, {"pipeline": spec.name, "config_hash": spec.config_hash()})


def run(spec: PipelineSpec, out_dir: str | None = None, resume: bool = False, spark=None,
        progress: bool = True) -> dict[str, Any]:
    """Run ``spec``; return the stats. Creates a SparkSession unless one is given."""
    out_dir = os.path.abspath(out_dir or spec.output_path())
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    tasks = list_tasks(spec)
    prepare_output(spec, out_dir, resume)
    # with global steps the row pass writes to _stage/ and the global stage writes the final shards
    task_dir = stage_dir(out_dir) if spec.steps else out_dir
    done = {(t.source, t.input.index): load_task_record(task_dir, t.source, t.input.index) for t in tasks}
    todo = [t for t in tasks if done[(t.source, t.input.index)] is None]
    if resume:
        log.info("resume: %d of %d input files already done", len(tasks) - len(todo), len(tasks))
    records = [r for r in done.values() if r is not None]
    spark_seconds = 0.0
    global_stats: list[dict[str, Any]] | None = None
    if todo or spec.steps:
        if spark is None:
            from pipelines.session import get_session

            spark = get_session(f"smelter:{spec.name}")
        t1 = time.time()
        if todo:
            with ProgressDisplay(task_dir, tasks, todo, enabled=progress):
                records += _run_on_spark(spark, spec, todo, task_dir)
        if spec.steps:
            records, global_stats = run_global(spark, spec, out_dir, records)
        spark_seconds = time.time() - t1
    stats = finish(spec, out_dir, tasks, records, seconds=time.time() - t0, spark_seconds=spark_seconds,
                   resumed=len(tasks) - len(todo), global_stats=global_stats)
    if spec.steps:
        shutil.rmtree(stage_dir(out_dir), ignore_errors=True)
    write_report(out_dir)
    return stats


def write_report(out_dir: str) -> str | None:
    """``report.html`` for the finished run. The run's outputs are already complete, so a report that
    cannot be made is a warning (``smelter report`` can make it again), never a failed run."""
    try:
        from mixtures.reports.run_report import write_run_report

        return write_run_report(out_dir)
    except Exception as e:  # noqa: BLE001 - see above
        log.warning("report.html not written: %s (run `smelter report %s` to retry)", e, out_dir)
        return None


def _run_on_spark(spark, spec: PipelineSpec, todo: list[Task], out_dir: str) -> list[dict[str, Any]]:
    """One Spark job, one partition per input file, biggest files first; returns the task records."""
    import pyarrow as pa

    from pipelines.task import run_task

    def size(t: Task) -> int:
        try:
            return os.path.getsize(t.input.path)
        except OSError:
            return 0

    ordered = sorted(todo, key=lambda t: (-size(t), t.source, t.input.index))

    def work(batches):
        for batch in batches:
            for i in batch.column("id").to_pylist():
                record = run_task(spec, ordered[i], out_dir)
                yield pa.RecordBatch.from_pydict({"record": [json.dumps(record)]})

    # spark.range is generated in the JVM: partition i holds exactly row i, the i-th biggest file
    df = spark.range(0, len(ordered), 1, numPartitions=len(ordered))
    rows = df.mapInArrow(work, "record string").collect()
    return [json.loads(r["record"]) for r in rows]


def finish(spec: PipelineSpec, out_dir: str, tasks: list[Task], records: list[dict[str, Any]],
           seconds: float, spark_seconds: float, resumed: int,
           global_stats: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Merge task records into manifest.json, stats.json and ledger/samples.json."""
    records = sorted(records, key=lambda r: (list(spec.sources).index(r["source"]), r["part"]))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "pipeline": spec.name,
        "config_hash": spec.config_hash(),
        "config": spec.config_dict(),
        "shards": [{"source": r["source"], "part": r["part"], "input": r["input"]["name"], **r["shard"]}
                   for r in records],
        "ledger": [{"source": r["source"], "part": r["part"], **r["ledger"]} for r in records],
        "totals": {"rows": sum(r["shard"]["rows"] for r in records),
                   "bytes": sum(r["shard"]["bytes"] for r in records),
                   "dropped": sum(r["ledger"]["rows"] for r in records)},
    }
    write_json_atomic(os.path.join(out_dir, "manifest.json"), manifest)

    sources: dict[str, Any] = {}
    samples: dict[str, dict[str, list]] = {}
    for name, src in spec.sources.items():
        recs = [r for r in records if r["source"] == name]
        steps = []
        for i, s in enumerate(src.steps):
            per = [r["steps"][i] for r in recs]
            drops: dict[str, int] = {}
            step_counters: dict[str, int] = {}
            for p in per:
                for k, v in p["drops"].items():
                    drops[k] = drops.get(k, 0) + v
                for k, v in p.get("counters", {}).items():
                    step_counters[k] = step_counters.get(k, 0) + v
            steps.append({"step": s.name, "rows_in": sum(p["rows_in"] for p in per),
                          "rows_out": sum(p["rows_out"] for p in per), "drops": dict(sorted(drops.items())),
                          "counters": dict(sorted(step_counters.items())),
                          "seconds": round(sum(p["seconds"] for p in per), 3)})
        counters: dict[str, int] = {}
        reader_drops: dict[str, int] = {}
        for r in recs:
            for k, v in r["reader"]["counters"].items():
                counters[k] = counters.get(k, 0) + v
            for k, v in r["reader"].get("drops", {}).items():
                reader_drops[k] = reader_drops.get(k, 0) + v
        sources[name] = {
            "input_files": len(recs),
            "rows_read": sum(r["rows_read"] for r in recs),
            "rows_kept": sum(r["rows_kept"] for r in recs),
            "rows_dropped": sum(r["rows_dropped"] for r in recs),
            "reader": {"name": src.read.name, "counters": dict(sorted(counters.items())),
                       "drops": dict(sorted(reader_drops.items())),
                       "seconds": round(sum(r["reader"]["seconds"] for r in recs), 3)},
            "errors": [e for r in recs for e in r["reader"]["errors"]],
            "steps": steps,
            "task_seconds": round(sum(r["seconds"] for r in recs), 3),
        }
        for r in recs:
            for key, rows in r["samples"].items():
                bucket = samples.setdefault(name, {}).setdefault(key, [])
                bucket.extend(rows[: max(0, 10 - len(bucket))])
    stats = {
        "schema_version": SCHEMA_VERSION,
        "pipeline": spec.name,
        "config_hash": spec.config_hash(),
        "rows_read": sum(s["rows_read"] for s in sources.values()),
        "rows_kept": sum(s["rows_kept"] for s in sources.values()),
        "rows_dropped": sum(s["rows_dropped"] for s in sources.values()),
        "input_files": len(tasks),
        "input_files_resumed": resumed,
        "seconds": round(seconds, 3),
        "spark_seconds": round(spark_seconds, 3),
        "sources": sources,
        "global_steps": global_stats or [],
    }
    write_json_atomic(os.path.join(out_dir, "stats.json"), stats)
    write_json_atomic(os.path.join(out_dir, "ledger", "samples.json"), samples)
    shutil.rmtree(os.path.join(out_dir, "_progress"), ignore_errors=True)
    return stats


class ProgressDisplay:
    """Live progress per source (documents, documents/s, input files done) from ``_progress/``.

    Executors write their row counts there about once a second; this thread sums them. On a terminal
    it draws rich progress bars; otherwise it logs a line every 10 seconds.
    """

    def __init__(self, out_dir: str, tasks: list[Task], todo: list[Task], enabled: bool = True):
        self.dir = os.path.join(out_dir, "_progress")
        self.sources = list(dict.fromkeys(t.source for t in tasks))
        self.files = {s: sum(1 for t in todo if t.source == s) for s in self.sources}
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = time.time()

    def counts(self) -> dict[str, tuple[int, int]]:
        out = {s: (0, 0) for s in self.sources}
        for path in glob.glob(os.path.join(self.dir, "*", "*.json")):
            source = os.path.basename(os.path.dirname(path))
            try:
                with open(path) as fh:
                    p = json.load(fh)
            except (OSError, ValueError):
                continue
            rows, files = out.get(source, (0, 0))
            out[source] = (rows + p.get("rows", 0), files + int(bool(p.get("done"))))
        return out

    def _loop(self) -> None:
        import sys

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        # under spark-submit our stderr is a pipe through the JVM; `smelter run` says if a person watches
        console = Console(stderr=True, force_terminal=os.environ.get("SMELTER_TTY") == "1" or None)
        if console.is_terminal:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("files  {task.fields[docs]} docs  {task.fields[rate]} docs/s"),
                          TimeElapsedColumn(), console=console, transient=False) as bar:
                ids = {s: bar.add_task(s, total=self.files[s] or 1, docs=0, rate="0.0") for s in self.sources}
                while not self._stop.wait(0.5):
                    self._update(bar, ids)
                self._update(bar, ids)
        else:
            while not self._stop.wait(10):
                dt = max(time.time() - self.t0, 1e-9)
                line = "  ".join(f"{s}: {r} docs {r / dt:.1f} docs/s {f}/{self.files[s]} files"
                                 for s, (r, f) in self.counts().items())
                print(f"[smelter] {line}", file=sys.stderr, flush=True)

    def _update(self, bar, ids) -> None:
        dt = max(time.time() - self.t0, 1e-9)
        for s, (rows, files) in self.counts().items():
            bar.update(ids[s], completed=files, docs=rows, rate=f"{rows / dt:.1f}")

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        return False


def summary(stats: dict[str, Any], out_dir: str) -> str:
    """The short end-of-run summary the CLI prints."""
    lines = [f"smelter: {stats['pipeline']} done in {stats['seconds']:.1f}s: "
             f"{stats['rows_read']} rows read, {stats['rows_kept']} kept, {stats['rows_dropped']} dropped"
             + (f" ({stats['input_files_resumed']} of {stats['input_files']} input files resumed)"
                if stats["input_files_resumed"] else "")]
    for name, s in stats["sources"].items():
        errors = f", {len(s['errors'])} damaged-input errors" if s["errors"] else ""
        lines.append(f"  {name}: {s['input_files']} files, {s['rows_read']} read, {s['rows_kept']} kept{errors}")
        skipped = s["reader"].get("drops", {})
        if skipped:
            lines.append(f"    {'(reader) ' + s['reader']['name']:<18} skipped: "
                         + ", ".join(f"{k} {v}" for k, v in skipped.items()))
        for st in s["steps"]:
            drops = ", ".join(f"{k} {v}" for k, v in st["drops"].items()) or "none"
            counted = ", ".join(f"{k} {v}" for k, v in st.get("counters", {}).items())
            lines.append(f"    {st['step']:<18} in {st['rows_in']:>8}  out {st['rows_out']:>8}  dropped: {drops}"
                         + (f"  ({counted})" if counted else ""))
    for st in stats.get("global_steps", []):
        drops = ", ".join(f"{src} {reason} {n}" for src, d in st["drops"].items() for reason, n in d.items())
        lines.append(f"  global {st['step']:<18} in {st['rows_in']:>8}  out {st['rows_out']:>8}  "
                     f"removed: {drops or 'none'}")
    lines.append(f"  outputs: {out_dir}/ (shards/, manifest.json, stats.json, ledger/, report.html)")
    return "\n".join(lines)
