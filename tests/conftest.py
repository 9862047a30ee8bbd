"""Shared fixtures: the real corpus beside the project and one SparkSession for the whole test run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = (ROOT.parent / "shared" / "corpus").resolve()
WEB = CORPUS / "web"
EVAL_GLOB = str(WEB / "eval-pages-*.warc.gz")
GOLD = WEB / "extraction-gold.jsonl"
SCORER = ROOT.parent / "shared" / "tools" / "extraction_score.py"


def pytest_configure(config):
    if not CORPUS.is_dir():
        raise pytest.UsageError(f"the real corpus is missing: expected {CORPUS} (../shared/corpus)")


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession for every in-process test (shuffle partitions 2, UI off)."""
    from pipelines.session import get_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = get_session("smelter-tests", master="local[2]",
                          conf={"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false",
                                "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"})
    yield session
    session.stop()


def extract_texts(warc_glob: str) -> list[dict]:
    """(id, url, text) of every page of the WARC files that ``extract`` keeps, without Spark.

    The files are shared out between two forked processes (the test machine has two cores)."""
    import glob
    import multiprocessing

    jobs = list(enumerate(sorted(glob.glob(warc_glob))))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        parts = pool.map(_extract_file, [(warc_glob, i, path) for i, path in jobs], chunksize=1)
    return [row for part in parts for row in part]


def _extract_file(job: tuple[str, int, str]) -> list[dict]:
    from operators.base import InputFile, TaskContext
    from operators.extract import Extract, ExtractParams
    from operators.readers.warc import WarcParams, WarcReader
    from pipelines.task import _with_base_columns

    warc_glob, i, path = job
    reader = WarcReader(WarcParams(paths=warc_glob))
    step = Extract(ExtractParams())
    out: list[dict] = []
    ctx = TaskContext(source="web", input=InputFile(i, path, os.path.basename(path)))
    for batch in reader.read(ctx, 100):
        batch = step(_with_base_columns(batch, "web", "warc"), ctx)
        for row in batch.select(["id", "url", "text", "drop_reason"]).to_pylist():
            if row["drop_reason"] is None:
                out.append({"id": row["id"], "url": row["url"], "text": row["text"]})
    return out


@pytest.fixture(scope="session")
def web_texts() -> list[dict]:
    """The main text of every real web page in the corpus (~700 pages, ~25 s once per test run)."""
    return extract_texts(str(WEB / "*.warc.gz"))


@pytest.fixture(scope="session")
def book_texts() -> list[dict]:
    """The 40 Project Gutenberg books, whole, as documents."""
    return [{"id": p.stem, "url": None, "text": p.read_text(encoding="utf-8", errors="replace")}
            for p in sorted((CORPUS / "books").glob("*.txt"))]
