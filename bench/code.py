"""Code reader speed: ``source_tree`` + ``code_quality`` beside a plain Python loop over the same files.

Input: ``../shared/corpus/code`` (CPython's standard library, six versions, 524 files) copied ``--copies``
times into ``<workdir>/input/copy-NN``, so there are ``--copies`` trees with distinct names (one smelter
task each). Three ways over the same files:

(a) ``loop``     one Python process: ``os.walk`` the input, ``open`` + ``read`` + ``decode("utf-8")``
                 every file, nothing else: the floor for reading the bytes from Python.
(b) ``operators`` one Python process, no Spark: ``SourceTreeReader.read`` and ``CodeQuality`` on each
                 tree in turn, batches of 100 rows as in a pipeline (language, skip reasons, the
                 StarCoder2 filters), nothing written.
(c) ``smelter``  ``python -m pipelines.cli run <yaml> --master local[2]`` with ``source_tree`` and
                 ``code_quality``, writing Arrow shards, ledger, manifest and stats, timed from spawn to
                 exit (interpreter, JVM start-up and writing included). Its "in tasks" line divides by the
                 summed task seconds of stats.json instead (the work inside the executors, over 2 slots).

Before timing, every file is read once so all methods find it in the page cache. With ``--repeat N`` the
methods run in N interleaved rounds and the best time of each is kept. The machine is shared: compare
the ratios within one table.

    .venv/bin/python bench/code.py [--copies 20] [--repeat 1] [--workdir /tmp/smelter-bench-code]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS_CODE = (ROOT.parent / "shared" / "corpus" / "code").resolve()


def build_input(workdir: Path, copies: int) -> Path:
    """``copies`` copies of the corpus code, one tree each (rebuilt when the count changes)."""
    input_dir = workdir / "input"
    marker = input_dir / ".copies"
    if marker.exists() and marker.read_text() == str(copies):
        return input_dir
    shutil.rmtree(input_dir, ignore_errors=True)
    input_dir.mkdir(parents=True)
    for i in range(copies):
        shutil.copytree(CORPUS_CODE, input_dir / f"copy-{i:02d}")
    marker.write_text(str(copies))
    return input_dir


def plain_loop(input_dir: Path) -> tuple[int, int]:
    """(files, bytes): walk, open, read and decode every file."""
    files = size = 0
    for folder, dirs, names in os.walk(input_dir):
        dirs.sort()
        for name in sorted(names):
            if name.startswith("."):
                continue
            with open(os.path.join(folder, name), "rb") as fh:
                data = fh.read()
            data.decode("utf-8")
            files += 1
            size += len(data)
    return files, size


def operators_loop(input_dir: Path) -> tuple[int, int, int]:
    """(files read, bytes read, rows kept): the reader and the filter, tree after tree, in this process."""
    from operators.base import TaskContext
    from operators.filters.code import CodeQuality, CodeQualityParams
    from operators.readers.source_tree import SourceTreeParams, SourceTreeReader
    from pipelines.task import _with_base_columns

    reader = SourceTreeReader(SourceTreeParams(paths=str(input_dir / "*")))
    step = CodeQuality(CodeQualityParams())
    files = size = kept = 0
    for tree in reader.list_inputs():
        ctx = TaskContext(source="code", input=tree)
        for batch in reader.read(ctx, 100):
            batch = _with_base_columns(batch, "code", reader.name)
            batch = step(batch, ctx)
            kept += batch.column("drop_reason").null_count
        files += ctx.counters.get("files_read", 0)
        size += ctx.counters.get("bytes_read", 0)
    return files, size, kept


def smelter_run(input_dir: Path, workdir: Path, master: str) -> tuple[float, dict]:
    """Wall seconds of a whole ``smelter run`` and its stats.json."""
    pipeline = workdir / "code.yaml"
    out = workdir / "out"
    pipeline.write_text(
        "name: bench-code\n"
        "sources:\n"
        "  code:\n"
        f"    read: {{source_tree: {{paths: \"{input_dir}/*\"}}}}\n"
        "    steps:\n"
        "      - code_quality: {}\n"
        "steps: []\n"
        f"output: {{path: \"{out}\"}}\n")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(pipeline), "--output", str(out),
                        "--master", master, "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"smelter run failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return wall, json.loads((out / "stats.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/smelter-bench-code")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--only", default="a,b,c", help="methods to run, e.g. a,b")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    input_dir = build_input(workdir, args.copies)
    only = set(args.only.split(","))
    files, size = plain_loop(input_dir)  # warm the page cache; also the file and byte counts
    best: dict[str, float] = {}
    notes: dict[str, str] = {}
    stats: dict = {}
    for _ in range(args.repeat):
        if "a" in only:
            t0 = time.perf_counter()
            plain_loop(input_dir)
            best["a"] = min(best.get("a", 1e9), time.perf_counter() - t0)
        if "b" in only:
            t0 = time.perf_counter()
            n, b, kept = operators_loop(input_dir)
            best["b"] = min(best.get("b", 1e9), time.perf_counter() - t0)
            assert (n, b) == (files, size), (n, b, files, size)
            notes["b"] = f"{kept} kept"
        if "c" in only:
            wall, stats = smelter_run(input_dir, workdir, args.master)
            best["c"] = min(best.get("c", 1e9), wall)
            code = stats["sources"]["code"]
            assert code["reader"]["counters"]["files_read"] == files
            notes["c"] = f"{code['rows_kept']} kept"
    mb = size / 1e6
    print(f"{files} files, {mb:.1f} MB in {args.copies} trees; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| method | files | MB | seconds | files/s | MB/s | rows kept |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = {"a": "(a) plain Python loop: walk + open + read + decode (1 process)",
              "b": "(b) source_tree + code_quality operators, no Spark (1 process)",
              "c": f"(c) smelter run, Spark {args.master}, whole process"}
    for key in ("a", "b", "c"):
        if key in best:
            s = best[key]
            print(f"| {labels[key]} | {files} | {mb:.1f} | {s:.2f} | {files / s:,.0f} | {mb / s:.1f} | "
                  f"{notes.get(key, '-').split()[0]} |")
    if stats:
        code = stats["sources"]["code"]
        task_s = code["task_seconds"]
        print(f"| (c) in tasks: summed task seconds (2 slots) | {files} | {mb:.1f} | {task_s:.2f} | "
              f"{files / task_s:,.0f} | {mb / task_s:.1f} | {code['rows_kept']} |")
        step = code["steps"][0]
        print(f"\nsmelter: reader {code['reader']['seconds']:.2f} s, code_quality {step['seconds']:.2f} s "
              f"(summed over tasks); reader drops {code['reader']['drops']}, code_quality drops "
              f"{step['drops']}")


if __name__ == "__main__":
    main()
