"""Whole-process benchmark: HTML text extraction from WARC files, three ways.

All three methods run the same trafilatura settings (``favor_precision=True,
include_comments=False, deduplicate=False``; ``fast=False`` and
``include_tables=True`` are trafilatura's defaults) with the same per-document
time limit (``--timeout``) over the same WARC input:

(a) ``loop``      one Python process: fastwarc reads the response records with an
                  HTML HTTP Content-Type, resiliparse decodes the payload,
                  ``trafilatura.extract`` runs under a ``SIGALRM`` time limit,
                  orjson writes plain JSONL.
(b) ``datatrove`` datatrove's ``LocalPipelineExecutor`` running
                  ``WarcReader -> Trafilatura -> JsonlWriter`` (gzip JSONL, its
                  default) with ``tasks=<number of files>, workers=2``.
(c) ``smelter``   ``python -m pipelines.cli run pipelines/examples/extract.yaml``
                  on Spark ``local[2]``, writing Arrow IPC shards and a ledger.

Every method runs as a child process started with ``sys.executable`` and is timed
from spawn to exit, so interpreter start-up, imports, worker pools, Spark/JVM
start-up and output writing are all included ("whole process").

Input: the real pages of ``/work/shared/corpus/web/eval-pages-0000[0-3].warc.gz``
(693 HTML responses, each record its own gzip member) are copied round-robin
into ``--files`` gzipped WARC files until there are ``--records`` HTML
responses.  Records are re-serialised one gzip member each; payloads (and so
Content-Length and the block digests) are byte-identical.  Headers are
rewritten as follows:

* copy 0 of every record keeps its WARC-Record-ID and WARC-Target-URI; copy
  ``k > 0`` gets a deterministic new ``WARC-Record-ID`` (uuid5 of the original
  id and ``k``) and ``bench-copy=k`` appended to the URI query, for the request
  and the response record alike, so ids and URLs stay distinct;
* response records get ``WARC-Identified-Payload-Type: text/html`` (as in
  Common Crawl WARCs) unless ``--keep-headers`` is given.  Without that header
  datatrove's ``WarcReader`` falls back to libmagic on the payload, which calls
  about 9% of these pages "application/javascript", "text/xml", ... and drops
  them, so the methods would no longer see the same documents.

Each output file starts with its own warcinfo record.  The input is cached in
``<workdir>/input`` and rebuilt only when its manifest does not match the
requested parameters.

The machine is shared and noisy (other people run things on it): compare the
ratios within one invocation, not absolute numbers across invocations.  With
``--repeat N`` the methods run in N interleaved rounds and the best wall time
of each is reported.

Usage::

    .venv/bin/python bench/extract.py                 # all three methods
    .venv/bin/python bench/extract.py --only a,b --records 2000 --repeat 2
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_GLOB = "/work/shared/corpus/web/eval-pages-0000[0-3].warc.gz"
SMELTER_PIPELINE = "pipelines/examples/extract.yaml"
INPUT_FORMAT_VERSION = 1  # bump when build_input() changes what it writes

#: Identical trafilatura options for (a) and (b).  datatrove's ``Trafilatura``
#: step hard-codes ``include_comments=False`` and spells precision "favour".
TRAFILATURA_OPTIONS = {"favor_precision": True, "include_comments": False, "deduplicate": False}
HTML_TYPES = ("text/html", "application/xhtml+xml")
METHODS = {"a": "loop (1 process)", "b": "datatrove (2 workers)", "c": "smelter (Spark local[2])"}


# --------------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------------


def gzip_members(data: bytes):
    """Yield the decompressed content of each gzip member of ``data``."""
    pos = 0
    while pos < len(data):
        inflater = zlib.decompressobj(wbits=31)
        out = inflater.decompress(data[pos:])
        if not inflater.eof:
            raise ValueError(f"truncated gzip member at byte {pos}")
        yield out
        pos = len(data) - len(inflater.unused_data)
        if pos < len(data) and not data[pos:].strip(b"\0"):
            break  # trailing padding


def split_record(raw: bytes) -> tuple[list[str], bytes]:
    """Split one serialised WARC record into its header lines and its block (without trailer)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("WARC record without header terminator")
    lines = head.decode("utf-8").split("\r\n")
    length = int(
        next(
            v for k, v in (line.split(":", 1) for line in lines[1:]) if k.strip().lower() == "content-length"
        )
    )
    return lines, rest[:length]


def header_value(lines: list[str], name: str) -> str | None:
    """Return the value of WARC header ``name`` (case-insensitive), or None."""
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def is_html_response(lines: list[str], block: bytes) -> bool:
    """True for a response record whose HTTP Content-Type is HTML (what method (a) extracts)."""
    if header_value(lines, "WARC-Type") != "response":
        return False
    http_head = block.partition(b"\r\n\r\n")[0].decode("latin-1")
    match = re.search(r"^content-type:\s*([^;\r\n]+)", http_head, re.IGNORECASE | re.MULTILINE)
    return bool(match) and match.group(1).strip().lower() in HTML_TYPES


def rewrite_record(lines: list[str], block: bytes, copy: int, payload_type: bool) -> bytes:
    """Serialise a record again with copy-specific Record-ID/URI (see module docstring)."""
    out = [lines[0]]
    is_response = header_value(lines, "WARC-Type") == "response"
    for line in lines[1:]:
        key, _, value = line.partition(":")
        name, value = key.strip().lower(), value.strip()
        if copy and name == "warc-record-id":
            line = f"{key}: <urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{value}#{copy}')}>"
        elif copy and name == "warc-target-uri":
            line = f"{key}: {value}{'&' if '?' in value else '?'}bench-copy={copy}"
        out.append(line)
    if payload_type and is_response and header_value(lines, "WARC-Identified-Payload-Type") is None:
        out.append("WARC-Identified-Payload-Type: text/html")
    return "\r\n".join(out).encode("utf-8") + b"\r\n\r\n" + block + b"\r\n\r\n"


def warcinfo_record(filename: str) -> bytes:
    """A minimal warcinfo record naming the file."""
    block = b"software: smelter bench/extract.py\r\nformat: WARC File Format 1.0\r\n"
    head = (
        "WARC/1.0\r\nWARC-Type: warcinfo\r\n"
        f"WARC-Record-ID: <urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, filename)}>\r\n"
        f"WARC-Filename: {filename}\r\nWARC-Date: 2024-05-01T12:00:00Z\r\n"
        f"Content-Type: application/warc-fields\r\nContent-Length: {len(block)}\r\n\r\n"
    )
    return head.encode() + block + b"\r\n\r\n"


def load_units(sources: list[str]) -> list[list[tuple[list[str], bytes]]]:
    """Group the source records into units: the records up to and including one HTML response.

    In these files a unit is a request record followed by its response record.
    Records after the last HTML response of a file (and warcinfo records) are dropped.
    """
    units, pending = [], []
    for path in sources:
        for raw in gzip_members(Path(path).read_bytes()):
            lines, block = split_record(raw)
            if header_value(lines, "WARC-Type") == "warcinfo":
                continue
            pending.append((lines, block))
            if is_html_response(lines, block):
                units.append(pending)
                pending = []
        pending = []
    return units


def build_input(input_dir: Path, records: int, files: int, payload_type: bool) -> dict:
    """Build (or reuse) ``files`` WARC files holding ``records`` HTML responses; return the manifest."""
    sources = sorted(glob.glob(SOURCE_GLOB))
    if not sources:
        raise SystemExit(f"no source WARC files match {SOURCE_GLOB}")
    wanted = {
        "format": INPUT_FORMAT_VERSION,
        "records": records,
        "files": files,
        "payload_type_header": payload_type,
        "sources": [[p, os.path.getsize(p), int(os.path.getmtime(p))] for p in sources],
    }
    manifest_path = input_dir / "_manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if {k: manifest.get(k) for k in wanted} == wanted and all(
            (input_dir / name).exists() for name in manifest["warc_files"]
        ):
            return manifest
    print(f"building input in {input_dir} ...", file=sys.stderr, flush=True)
    shutil.rmtree(input_dir, ignore_errors=True)
    input_dir.mkdir(parents=True)

    units = load_units(sources)
    picked = [(units[i % len(units)], i // len(units)) for i in range(records)]
    names = []
    for f in range(files):
        name = f"bench-{f:05d}.warc.gz"
        with open(input_dir / name, "wb") as fh:
            fh.write(gzip.compress(warcinfo_record(name), compresslevel=6, mtime=0))
            for unit, copy in picked[f * records // files : (f + 1) * records // files]:
                for lines, block in unit:
                    fh.write(gzip.compress(rewrite_record(lines, block, copy, payload_type), 6, mtime=0))
        names.append(name)
    manifest = {
        **wanted,
        "warc_files": names,
        "source_html_records": len(units),
        "copies": -(-records // len(units)),
        "bytes": sum((input_dir / n).stat().st_size for n in names),
    }
    counted = count_html_records(input_dir)
    if counted != records:
        raise SystemExit(f"input check failed: fastwarc sees {counted} HTML responses, expected {records}")
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def count_html_records(input_dir: Path) -> int:
    """Count HTML response records in ``input_dir`` with fastwarc (validates the files we wrote)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    count = 0
    for path in sorted(input_dir.glob("*.warc.gz")):
        with open(path, "rb") as fh:
            for record in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                count += (record.http_content_type or "").lower() in HTML_TYPES
    return count


# --------------------------------------------------------------------------------------------------
# Method workers: these run inside the timed child process
# --------------------------------------------------------------------------------------------------


def worker_loop(input_dir: str, out_dir: str, timeout: float) -> dict:
    """Method (a): a plain single-process loop over all input files.

    The per-document time limit is a ``setitimer(ITIMER_REAL)`` alarm whose handler
    raises ``TimeoutError`` in the extracting code (checked between Python
    bytecodes, i.e. it cannot interrupt one long libxml2 call).
    """
    import signal

    import orjson
    import trafilatura
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    def on_alarm(signum, frame):
        raise TimeoutError

    signal.signal(signal.SIGALRM, on_alarm)
    stats = {
        "docs_in": 0,
        "docs_out": 0,
        "timeouts": 0,
        "errors": 0,
        "skipped_non_html": 0,
        "extract_s": 0.0,
        "slowest_doc_s": 0.0,
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(out_dir) / "out.jsonl", "wb") as out:
        for path in sorted(Path(input_dir).glob("*.warc.gz")):
            with open(path, "rb") as fh:
                for record in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                    if (record.http_content_type or "").lower() not in HTML_TYPES:
                        stats["skipped_non_html"] += 1
                        continue
                    stats["docs_in"] += 1
                    body = record.reader.read()
                    html = bytes_to_str(body, detect_encoding(body))
                    start = time.perf_counter()
                    try:
                        signal.setitimer(signal.ITIMER_REAL, timeout)
                        try:
                            text = trafilatura.extract(html, **TRAFILATURA_OPTIONS)
                        finally:
                            signal.setitimer(signal.ITIMER_REAL, 0)
                    except TimeoutError:
                        stats["timeouts"] += 1
                        continue
                    except Exception:
                        stats["errors"] += 1
                        continue
                    finally:
                        took = time.perf_counter() - start
                        stats["extract_s"] += took
                        stats["slowest_doc_s"] = max(stats["slowest_doc_s"], took)
                    if text:
                        stats["docs_out"] += 1
                        doc = {
                            "id": record.record_id,
                            "url": record.headers.get("WARC-Target-URI"),
                            "date": record.headers.get("WARC-Date"),
                            "text": text,
                        }
                        out.write(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE))
    return stats


def worker_datatrove(input_dir: str, out_dir: str, timeout: float, tasks: int, workers: int) -> dict:
    """Method (b): datatrove's local executor, one task per input file, ``workers`` at a time."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    options = dict(TRAFILATURA_OPTIONS)
    assert options.pop("include_comments") is False  # hard-coded in datatrove's Trafilatura.extract
    executor = LocalPipelineExecutor(
        pipeline=[
            WarcReader(input_dir, glob_pattern="*.warc.gz"),
            Trafilatura(favour_precision=options.pop("favor_precision"), timeout=timeout, **options),
            JsonlWriter(str(Path(out_dir) / "output")),
        ],
        tasks=tasks,
        workers=workers,
        logging_dir=str(Path(out_dir) / "logs"),
    )
    executor.run()
    return {"tasks": executor.tasks, "workers": executor.workers}


# --------------------------------------------------------------------------------------------------
# Running and measuring
# --------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One timed child process: exit code, wall s, CPU s of its process tree, CPU s used by everything else."""

    rc: int
    wall: float
    cpu: float
    others_cpu: float


@dataclass
class Result:
    """One method's measurements over the repeats; the table shows the run with the best wall time."""

    key: str
    ok: bool = False
    note: str = ""
    runs: list[tuple[Timing, int, int, dict]] = field(default_factory=list)  # (timing, in, out, details)

    def record(self, timing: Timing, docs_in: int, docs_out: int, details: dict) -> None:
        """Add one successful run."""
        self.ok = not self.note
        self.runs.append((timing, docs_in, docs_out, details))

    def fail(self, note: str) -> None:
        """Mark the method failed (a failure in any round shows in the table)."""
        self.ok, self.note = False, note

    @property
    def best(self) -> tuple[Timing, int, int, dict]:
        return min(self.runs, key=lambda run: run[0].wall)

    @property
    def rate(self) -> float | None:
        """Docs in / wall s of the best run."""
        if not (self.ok and self.runs):
            return None
        timing, docs_in, _, _ = self.best
        return docs_in / timing.wall


CLK_TCK = os.sysconf("SC_CLK_TCK")


def system_busy_s() -> float:
    """CPU seconds spent busy (not idle/iowait) by the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def tree_cpu(root: int, seen: dict[tuple[int, int], float]) -> None:
    """Update ``seen[(pid, starttime)]`` with the own user+sys CPU s of ``root`` and its descendants."""
    procs = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        # fields after the command: state ppid ... utime(12th) stime(13th) ... starttime(20th)
        procs[int(entry.name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK, int(rest[19]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in procs:
            _, cpu, start = procs[pid]
            seen[(pid, start)] = max(cpu, seen.get((pid, start), 0.0))
        stack.extend(children.get(pid, []))


def timed_run(cmd: list[str], run_dir: Path, cwd: Path = REPO_ROOT, poll_s: float = 0.25) -> Timing:
    """Run ``cmd`` (stdout/stderr to files in ``run_dir``) and time it from spawn to exit.

    The CPU of the process tree is sampled from /proc every ``poll_s`` (processes that
    exit between samples lose at most ``poll_s`` of CPU); the machine-wide busy CPU over
    the same interval minus that is what other users' processes took.
    """
    seen: dict[tuple[int, int], float] = {}
    with open(run_dir / "stdout.txt", "wb") as so, open(run_dir / "stderr.txt", "wb") as se:
        busy0, start = system_busy_s(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=so, stderr=se, stdin=subprocess.DEVNULL)
        while True:
            try:
                rc = proc.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                tree_cpu(proc.pid, seen)
        wall, busy = time.perf_counter() - start, system_busy_s() - busy0
    cpu = sum(seen.values())
    return Timing(rc, wall, cpu, max(0.0, busy - cpu))


def fresh_dir(path: Path) -> Path:
    """Empty ``path`` (outputs and datatrove's completion markers must not leak between runs)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def tail(path: Path, lines: int = 3) -> str:
    """Last non-empty lines of a log file, joined on one line."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def self_cmd(*args: str) -> list[str]:
    """Command line re-running this script in worker mode under the same interpreter."""
    return [sys.executable, str(Path(__file__).resolve()), *args]


def run_loop(args, run_dir: Path, res: Result) -> None:
    """Time method (a) once and fold the measurement into ``res``."""
    summary = run_dir / "summary.json"
    cmd = self_cmd(
        "--worker",
        "a",
        "--input",
        str(args.input),
        "--out",
        str(run_dir / "out"),
        "--timeout",
        str(args.timeout),
        "--summary",
        str(summary),
    )
    timing = timed_run(cmd, run_dir)
    if timing.rc != 0:
        res.fail(f"failed (rc={timing.rc}): {tail(run_dir / 'stderr.txt', 1)} (see {run_dir}/stderr.txt)")
        return
    stats = json.loads(summary.read_text())
    res.record(timing, stats["docs_in"], stats["docs_out"], stats)


def datatrove_stats(log_dir: Path) -> dict:
    """Pull reader/extractor counters and times out of datatrove's merged ``stats.json``."""
    stats = json.loads((log_dir / "stats.json").read_text())
    out = {}
    for step in stats:
        name, counters = step.get("name", ""), step.get("stats", {})
        tag = "reader" if "Warc" in name else "extract" if "Trafilatura" in name else "writer"
        for key, value in counters.items():
            if isinstance(value, dict):
                value = value.get("total", value)
            out[f"{tag}.{key}"] = value
        if isinstance(step.get("time_stats"), dict):
            out[f"{tag}.time_total_s"] = step["time_stats"].get("total")
            out[f"{tag}.time_mean_s"] = step["time_stats"].get("mean")
    return out


def task_overlap(log_dir: Path) -> int:
    """Peak number of datatrove tasks running at once, from the first/last timestamp of each task log."""
    spans = []
    for path in sorted((log_dir / "logs").glob("task_*.log")):
        stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)", path.read_text(errors="replace"), re.M)
        if stamps:
            spans.append((stamps[0], stamps[-1]))
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    peak = cur = 0
    for _, delta in events:
        cur += delta
        peak = max(peak, cur)
    return peak


def run_datatrove(args, run_dir: Path, res: Result) -> None:
    """Time method (b) once; count its output documents and check it used 2 workers on every file."""
    summary = run_dir / "summary.json"
    cmd = self_cmd(
        "--worker",
        "b",
        "--input",
        str(args.input),
        "--out",
        str(run_dir),
        "--timeout",
        str(args.timeout),
        "--summary",
        str(summary),
        "--tasks",
        str(args.files),
        "--workers",
        "2",
    )
    timing = timed_run(cmd, run_dir)
    if timing.rc != 0:
        res.fail(f"failed (rc={timing.rc}): {tail(run_dir / 'stderr.txt', 1)} (see {run_dir}/stderr.txt)")
        return
    docs_out = empty = 0
    for path in sorted((run_dir / "output").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if json.loads(line).get("text"):
                    docs_out += 1
                else:
                    empty += 1
    stats = datatrove_stats(run_dir / "logs")
    stats["peak_concurrent_tasks"] = task_overlap(run_dir / "logs")
    stats["output_files"] = len(list((run_dir / "output").glob("*.jsonl.gz")))
    stats["empty_output_docs"] = empty
    stats["timeout_warnings_in_logs"] = sum(
        log.read_text(errors="replace").count("Timeout while")
        for log in (run_dir / "logs" / "logs").glob("task_*.log")
    )
    res.record(timing, int(stats.get("reader.documents", 0)), docs_out, stats)


def arrow_rows(paths: list[Path], text_column: str | None = None) -> tuple[int, int]:
    """(rows, rows with non-empty ``text_column``) over Arrow IPC files or streams."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = nonempty = 0
    for path in paths:
        try:
            table = pa.ipc.open_file(path).read_all()
        except pa.ArrowInvalid:
            table = pa.ipc.open_stream(path).read_all()
        rows += table.num_rows
        if text_column and text_column in table.column_names:
            col = table[text_column]
            nonempty += pc.sum(pc.greater(pc.fill_null(pc.utf8_length(col), 0), 0)).as_py() or 0
        else:
            nonempty += table.num_rows
    return rows, nonempty


def run_smelter(args, run_dir: Path, res: Result) -> None:
    """Time method (c) once: the smelter CLI on Spark local[2]; docs = shard rows + ledger rows."""
    out = run_dir / "out"
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "run",
        SMELTER_PIPELINE,
        "--set",
        f"sources.web.read.warc.paths={args.input}/*.warc.gz",
        "--set",
        f"sources.web.steps.0.extract.timeout={args.timeout}",
        "--no-progress",
        "--output",
        str(out),
        "--master",
        "local[2]",
    ]
    timing = timed_run(cmd, run_dir)
    if timing.rc != 0:
        res.fail(f"failed (rc={timing.rc}): {tail(run_dir / 'stderr.txt', 1)} (see {run_dir}/stderr.txt)")
        return
    shards = sorted((out / "shards" / "web").glob("*.arrow"))
    ledger = sorted((out / "ledger").glob("**/*.arrow"))
    if not shards:
        res.fail(f"ran (rc=0) but wrote no {out}/shards/web/*.arrow")
        return
    shard_rows, docs_out = arrow_rows(shards, "text")
    ledger_rows, _ = arrow_rows(ledger)
    details = {
        "shards": len(shards),
        "shard_rows": shard_rows,
        "ledger_files": len(ledger),
        "ledger_rows": ledger_rows,
    }
    res.record(timing, shard_rows + ledger_rows, docs_out, details)


RUNNERS = {"a": run_loop, "b": run_datatrove, "c": run_smelter}


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def machine_facts() -> list[str]:
    """nproc, CPU model, load and package versions, as markdown bullet lines."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for pkg in (
        "trafilatura",
        "lxml",
        "datatrove",
        "fastwarc",
        "resiliparse",
        "warcio",
        "pyspark",
        "pyarrow",
    ):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg} -")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- machine: nproc={len(os.sched_getaffinity(0))} (os.cpu_count={os.cpu_count()}), CPU: {model}, "
        f"load average at start: {load}",
        f"- Python {platform.python_version()} ({sys.executable}); " + ", ".join(versions),
    ]


def fmt(value, spec: str) -> str:
    """Format a number or print '-' for missing values."""
    return "-" if value is None else format(value, spec)


def report(args, manifest: dict, results: dict[str, Result], facts: list[str]) -> str:
    """The markdown report: settings, machine facts, the table and per-method details."""
    lines = [
        "## Extraction benchmark (whole process)",
        "",
        f"- input: {manifest['records']} HTML responses in {manifest['files']} WARC files "
        f"({manifest['bytes'] / 1e6:.1f} MB gzipped) under {args.input}, built from "
        f"{manifest['source_html_records']} real pages x{manifest['copies']}; "
        f"WARC-Identified-Payload-Type header added: {manifest['payload_type_header']}",
        f"- trafilatura: {', '.join(f'{k}={v}' for k, v in TRAFILATURA_OPTIONS.items())} "
        f"(fast=False, include_tables=True); per-document timeout {args.timeout:g} s",
        f"- each method run {args.repeat}x (interleaved), best wall time shown; the machine is shared, "
        "so compare ratios within this table",
        *facts,
        f"- load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        "| method | docs in | docs out (non-empty) | wall s | docs/s | docs/s ÷ (a) | docs/s ÷ (b) "
        "| CPU s | others' CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base_a = results["a"].rate if "a" in results else None
    base_b = results["b"].rate if "b" in results else None
    for key, res in results.items():
        label = f"({key}) {METHODS[key]}"
        if not res.ok:
            lines.append(f"| {label} | {res.note} | - | - | - | - | - | - | - |")
            continue
        timing, docs_in, docs_out, _ = res.best
        lines.append(
            f"| {label} | {docs_in} | {docs_out} | {timing.wall:.1f} | {res.rate:.1f} | "
            f"{fmt(res.rate / base_a if base_a else None, '.2f')} | "
            f"{fmt(res.rate / base_b if base_b else None, '.2f')} | "
            f"{timing.cpu:.0f} | {timing.others_cpu / timing.wall:.2f} cores |"
        )
    c = results.get("c")
    if c is not None and c.ok:
        lines.append("")
        for base, name in ((base_a, "(a)"), (base_b, "(b)")):
            if base:
                lines.append(f"(c)/{name} throughput ratio: **{c.rate / base:.2f}x**  ")
    lines += [
        "",
        "docs/s = docs in / wall. CPU s = user+sys of the method's process tree (sampled from /proc); "
        "others' CPU = average number of cores busy with other processes during the run "
        "(machine-wide busy CPU minus the method's).",
        "",
    ]
    for key, res in results.items():
        for i, (timing, _, _, details) in enumerate(res.runs):
            facts = ", ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in details.items())
            lines.append(
                f"- ({key}) run {i + 1}: wall {timing.wall:.1f} s, CPU {timing.cpu:.1f} s, "
                f"others {timing.others_cpu:.1f} s; {facts}"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (``--worker`` and the options after it are internal)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=5000, help="HTML records in the input (default 5000)")
    p.add_argument("--files", type=int, default=8, help="number of WARC files (default 8)")
    p.add_argument("--timeout", type=float, default=5.0, help="per-document time limit, s (default 5)")
    p.add_argument("--only", default="a,b,c", help="comma-separated subset of a,b,c (default all)")
    p.add_argument("--repeat", type=int, default=1, help="rounds; the best wall time is reported")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/smelter-bench"), help="input and outputs")
    p.add_argument(
        "--keep-headers",
        action="store_true",
        help="do not add WARC-Identified-Payload-Type (datatrove then sniffs with libmagic)",
    )
    p.add_argument("--worker", choices=["a", "b"], help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--summary", help=argparse.SUPPRESS)
    p.add_argument("--tasks", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Build the input, run the selected methods, print the markdown report."""
    args = parse_args(argv)
    if args.worker == "a":
        stats = worker_loop(str(args.input), args.out, args.timeout)
        Path(args.summary).write_text(json.dumps(stats))
        return 0
    if args.worker == "b":
        stats = worker_datatrove(str(args.input), args.out, args.timeout, args.tasks, args.workers)
        Path(args.summary).write_text(json.dumps(stats))
        return 0

    only = [k.strip() for k in args.only.split(",") if k.strip()]
    if not only or any(k not in METHODS for k in only):
        raise SystemExit(f"--only takes a comma-separated subset of {','.join(METHODS)}")
    args.input = args.workdir / "input"
    manifest = build_input(args.input, args.records, args.files, payload_type=not args.keep_headers)
    results = {k: Result(k) for k in sorted(only)}
    facts = machine_facts()
    for round_ in range(args.repeat):
        for key in results:
            print(
                f"round {round_ + 1}/{args.repeat}: running ({key}) {METHODS[key]} ...",
                file=sys.stderr,
                flush=True,
            )
            RUNNERS[key](args, fresh_dir(args.workdir / "runs" / key), results[key])
            res = results[key]
            print(
                f"  -> {res.runs[-1][0].wall:.1f} s" if res.ok else f"  -> {res.note}",
                file=sys.stderr,
                flush=True,
            )
    print(report(args, manifest, results, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
