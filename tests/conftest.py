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
