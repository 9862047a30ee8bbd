"""Running smelter the way a user does: the CLI, through spark-submit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def smelter(*args: str, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kw)


def run_pipeline(pipeline: str, out: Path, *extra: str, master: str = "local[2]") -> dict:
    r = smelter("run", pipeline, "--output", str(out), "--master", master, "--no-progress", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads((out / "stats.json").read_text())


def shard_digests(out: Path) -> dict[str, str]:
    return {s["path"]: s["sha256"] for s in json.loads((out / "manifest.json").read_text())["shards"]}
