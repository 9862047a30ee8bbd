"""Whole runs of the web extraction pipeline through the CLI and spark-submit, on the real pages."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from operators.writers import read_arrow
from tests.conftest import EVAL_GLOB, GOLD, ROOT, SCORER, WEB
from tests.e2e.helpers import run_pipeline, shard_digests

EXAMPLE = "pipelines/examples/extract.yaml"
EVAL = f"sources.web.read.warc.paths={EVAL_GLOB}"


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    stats = run_pipeline(EXAMPLE, out, "--set", EVAL)
    return out, stats


def test_every_page_is_in_a_shard_or_in_the_ledger(eval_run):
    out, stats = eval_run
    assert stats["rows_read"] == 693
    shard_urls, ledger_urls = [], []
    for p in sorted((out / "shards" / "web").glob("*.arrow")):
        t = read_arrow(str(p))
        assert t.column_names == ["id", "source", "url", "warc_date", "warc_record_id", "text"]
        shard_urls += t.column("url").to_pylist()
    for p in sorted((out / "ledger" / "web").glob("*.arrow")):
        t = read_arrow(str(p))
        assert set(t.column("step").to_pylist()) <= {"extract"}
        ledger_urls += t.column("url").to_pylist()
    assert len(shard_urls) == stats["rows_kept"] and len(ledger_urls) == stats["rows_dropped"]
    assert len(shard_urls) + len(ledger_urls) == 693
    gold = {json.loads(line)["url"] for line in GOLD.open()}
    assert set(shard_urls) | set(ledger_urls) == gold
    extract = stats["sources"]["web"]["steps"][0]
    assert extract["rows_in"] == 693 and extract["rows_out"] == stats["rows_kept"]


def test_extraction_quality_reaches_the_floor(eval_run):
    out, _ = eval_run
    r = subprocess.run([sys.executable, str(SCORER), str(GOLD), str(out / "shards")], capture_output=True,
                       text=True, check=True)
    score = json.loads(r.stdout)
    assert score["f1"] >= 0.915, score


def test_kill_the_driver_then_resume_gives_the_same_shards(eval_run, tmp_path):
    """SIGKILL the whole driver process group mid-run; --resume finishes without redoing done files.
    Two of the four files (time budget): the first is done when the kill comes, the second is not."""
    full, _ = eval_run
    out = tmp_path / "out"
    two = f"sources.web.read.warc.paths={WEB}/eval-pages-0000[01].warc.gz"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", EXAMPLE, "--set", two,
                             "--output", str(out), "--master", "local[1]", "--no-progress"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tasks = out / "_tasks" / "web"
    deadline = time.time() + 300
    while time.time() < deadline and not list(tasks.glob("part-*.json")):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(tasks.glob("part-*.json")))
    assert done_before == 1
    assert not (out / "manifest.json").exists()
    stats = run_pipeline(EXAMPLE, out, "--set", two, "--resume")
    assert stats["input_files_resumed"] == done_before
    full_digests = shard_digests(full)
    assert shard_digests(out) == {p: d for p, d in full_digests.items() if p.endswith(("part-00000.arrow",
                                                                                       "part-00001.arrow"))}
    parts = ("part-00000.arrow", "part-00001.arrow")
    full_manifest = json.loads((full / "manifest.json").read_text())
    assert stats["rows_read"] == sum(e["rows"] for key in ("shards", "ledger") for e in full_manifest[key]
                                     if e["path"].endswith(parts)) > 300
    assert not list(out.rglob("*.tmp-*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def test_same_shards_on_a_standalone_spark_cluster(eval_run, tmp_path):
    """A real standalone Master and Worker on 127.0.0.1, started from pyspark's own spark-class."""
    import pyspark

    full, _ = eval_run
    spark_class = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class")
    port = _free_port()
    env = {**os.environ, "SPARK_LOG_DIR": str(tmp_path / "logs"), "SPARK_WORKER_DIR": str(tmp_path / "work"),
           "SPARK_LOCAL_IP": "127.0.0.1"}
    procs = [subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(_free_port())], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        _wait_port(port)
        procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker",
                                       f"spark://127.0.0.1:{port}", "--cores", "2", "--memory", "2g",
                                       "--webui-port", str(_free_port()), "--host", "127.0.0.1"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        out = tmp_path / "out"
        one_file = f"sources.web.read.warc.paths={WEB / 'eval-pages-00000.warc.gz'}"
        stats = run_pipeline(EXAMPLE, out, "--set", one_file, master=f"spark://127.0.0.1:{port}")
        assert stats["rows_read"] > 100
        assert shard_digests(out) == {"shards/web/part-00000.arrow": shard_digests(full)["shards/web/part-00000.arrow"]}
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
