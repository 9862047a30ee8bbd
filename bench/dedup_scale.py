"""How ``minhash_dedup`` scales: the whole dedup (signatures, buckets, components, removal) on N
documents, N = 25k, 50k, 100k by default, with ``smelter run`` on local[2].

Documents are real text with generated edits: the books and the CPython modules of
../shared/corpus cut into ~4.5 KB pieces; each generated document is a piece with a few random word
edits (a near duplicate of the piece and of the other documents made from it: about one in three
documents has a near duplicate) or, for the rest, a piece with its words shuffled inside lines (a
distinct text with the same vocabulary). Input: 8 JSONL files per size, cached in the workdir.

For each size: wall time of the run (spark-submit, JVM and all), time per 1k documents (linear
scaling keeps it flat), documents removed, and the peak resident memory of the driver's Python
process and of the driver JVM (in local mode the JVM also hosts the executors' shuffle and cache).

    .venv/bin/python bench/dedup_scale.py [--sizes 25000,50000,100000] [--workdir /tmp/smelter-dedup-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"


def pieces(size: int = 4500) -> list[str]:
    out = []
    files = sorted((CORPUS / "books").glob("*.txt")) + sorted((CORPUS / "code").glob("*/*.py"))
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        for start in range(0, len(text) - size // 2, size):
            out.append(text[start:start + size])
    return out


def make_input(folder: Path, n: int, seed: int = 0) -> None:
    if (folder / "done").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    base = pieces()
    files = [open(folder / f"part-{i}.jsonl", "w") for i in range(8)]
    for k in range(n):
        piece = base[rng.randrange(len(base))]
        if rng.random() < 0.35:  # near duplicate: a few word edits
            ws = piece.split(" ")
            for _ in range(rng.randint(1, 6)):
                i = rng.randrange(len(ws))
                ws[i] = rng.choice(["the", "a", "of", ws[i].upper(), ""])
            text = " ".join(ws)
        else:  # a distinct text: words shuffled within each line
            lines = []
            for line in piece.split("\n"):
                ws = line.split(" ")
                rng.shuffle(ws)
                lines.append(" ".join(ws))
            text = "\n".join(lines) + f"\n{k}"
        files[k % 8].write(json.dumps({"text": text, "n": k}) + "\n")
    for f in files:
        f.close()
    (folder / "done").write_text("ok")


def peak_rss(pids_of, stop: threading.Event, peaks: dict) -> None:
    """Poll /proc for the driver Python process and the driver JVM, keep their peak RSS (MB)."""
    while not stop.wait(0.2):
        for name, pid in pids_of().items():
            try:
                with open(f"/proc/{pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmRSS:"):
                            peaks[name] = max(peaks.get(name, 0), int(line.split()[1]) // 1024)
            except OSError:
                pass


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def run_size(workdir: Path, n: int) -> dict:
    data = workdir / f"in-{n}"
    make_input(data, n)
    pipeline = workdir / f"dedup-{n}.yaml"
    pipeline.write_text(f"""name: dedup-scale-{n}
sources:
  docs:
    read: {{jsonl: {{paths: "{data}/*.jsonl"}}}}
steps:
  - minhash_dedup: {{}}
output: {{path: {workdir}/out-{n}}}
""")
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(pipeline), "--master", "local[2]",
                             "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def pids():
        """The driver JVM (spark-submit's java) and the driver Python (submit.py) of this run."""
        out = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                cmd = cmdline(int(entry))
                if str(pipeline) in cmd:
                    if "submit.py" in cmd and "java" not in cmd.split(" ")[0]:
                        out["python"] = int(entry)
                    elif "java" in cmd.split(" ")[0]:
                        out["jvm"] = int(entry)
        return out

    stop, peaks = threading.Event(), {}
    watcher = threading.Thread(target=peak_rss, args=(pids, stop, peaks), daemon=True)
    watcher.start()
    out, err = proc.communicate()
    stop.set()
    watcher.join()
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed for {n}: {err[-2000:]}")
    stats = json.loads((workdir / f"out-{n}" / "stats.json").read_text())
    g = stats["global_steps"][0]
    return {"n": n, "wall": wall, "spark": stats["spark_seconds"], "step": g["seconds"],
            "removed": n - g["rows_out"], "clusters": g["components"], "rounds": g["component_rounds"],
            "py_mb": peaks.get("python", 0), "jvm_mb": peaks.get("jvm", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="25000,50000,100000")
    ap.add_argument("--workdir", default="/tmp/smelter-dedup-scale")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    rows = [run_size(workdir, int(s)) for s in args.sizes.split(",")]
    first = rows[0]
    print("| documents | wall s | dedup step s | s per 1k docs (step) | vs linear | removed | clusters | CC rounds "
          "| driver Python peak MB | driver JVM peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_k = r["step"] / r["n"] * 1000
        vs = per_k / (first["step"] / first["n"] * 1000)
        print(f"| {r['n']} | {r['wall']:.1f} | {r['step']:.1f} | {per_k:.2f} | {vs:.2f}x | {r['removed']} | "
              f"{r['clusters']} | {r['rounds']} | {r['py_mb']} | {r['jvm_mb']} |")


if __name__ == "__main__":
    main()
