"""``smelter quality train`` / ``eval`` end to end on small real inputs, and its one-line errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from operators import quality
from operators.base import InputFile, TaskContext
from operators.quality import QualityClassifier, QualityParams
from operators.readers.books import TextFilesParams, TextFilesReader
from pipelines import cli
from pipelines.task import LEDGER_SCHEMA
from tests.conftest import CORPUS, ROOT

SMELTER = str(Path(sys.executable).parent / "smelter")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Positives: chunks of eight real books as JSON Lines (with their ``path``, so a book is one group)
    and three whole books as .txt files. Negatives: real Python modules, as a run's ledger would hold
    them (``text_head``, two steps) and as a Parquet file."""
    base = tmp_path_factory.mktemp("quality-cli")
    books = sorted((CORPUS / "books").glob("*.txt"))
    reader = TextFilesReader(TextFilesParams(paths="x", strip="gutenberg", max_chars=3000))
    with gzip.open(base / "books.jsonl.gz", "wt", encoding="utf-8") as fh:
        for i, path in enumerate(books[:8]):
            for batch in reader.read(TaskContext("books", InputFile(i, str(path), path.name)), 1000):
                for row in batch.to_pylist()[:25]:
                    fh.write(json.dumps({"text": row["text"], "path": row["path"]}) + "\n")
    whole = base / "whole"
    whole.mkdir()
    for path in books[8:11]:
        (whole / path.name).write_bytes(path.read_bytes())
    code = sorted((CORPUS / "code" / "python3.12").glob("*.py"))
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in code]
    ledger = base / "ledger" / "code"
    ledger.mkdir(parents=True)
    n = len(texts) // 2
    table = pa.table({
        "id": [f"c{i}" for i in range(n)], "source": ["code"] * n, "url": [None] * n,
        "path": [str(p) for p in code[:n]], "step": ["code_quality", "exact_dedup"] * (n // 2) + ["code_quality"] * (n % 2),
        "reason": ["bad"] * n, "detail": [None] * n, "dup_of": [None] * n,
        "length": [len(t) for t in texts[:n]], "text_head": texts[:n]}, schema=LEDGER_SCHEMA)
    with ipc.new_file(str(ledger / "part-00000.arrow"), table.schema) as w:
        w.write_table(table)
    pq.write_table(pa.table({"content": texts[n:], "path": [str(p) for p in code[n:]]}), base / "code.parquet")
    return {"base": base, "jsonl": base / "books.jsonl.gz", "whole": whole, "ledger": base / "ledger",
            "parquet": base / "code.parquet"}


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([SMELTER, "quality", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_train_end_to_end_through_the_command(inputs, tmp_path):
    model = tmp_path / "model.bin"
    r = run_cli("train", "--positive", str(inputs["jsonl"]), str(inputs["whole"]),
                "--negative", str(inputs["ledger"]), str(inputs["parquet"]), "--text-field", "text",
                "-o", str(model), "--dim", "32")
    assert r.returncode == 2 and r.stderr.count("\n") == 1  # the Parquet file has "content", not "text"
    assert r.stderr.startswith("smelter: error: ") and "code.parquet: no column 'text'" in r.stderr
    r = run_cli("train", "--positive", str(inputs["jsonl"]), str(inputs["whole"]),
                "--negative", str(inputs["ledger"]), "-o", str(model), "--dim", "32")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    n_ledger = pa.ipc.open_file(str(next(inputs["ledger"].rglob("*.arrow")))).read_all().num_rows
    assert f"read {8 * 25 + 3} positive and {n_ledger} negative documents" in out
    meta = json.loads((tmp_path / "model.json").read_text())
    m = meta["metrics"]["heldout"]
    assert f"held-out accuracy {m['accuracy']:.4f}  ROC AUC {m['roc_auc']:.4f}" in out
    assert f"held out: {m['positive']} positive + {m['negative']} negative" in out
    assert m["roc_auc"] >= 0.9 and m["positive"] >= 10 and m["negative"] >= 3
    assert meta["format"] == quality.METADATA_FORMAT and meta["fasttext"]["dim"] == 32
    assert meta["preprocess"] == {"lowercase": False, "max_chars": 100_000, "whitespace": "folded"}
    # the model works in the pipeline step (labels and preprocessing from model.json): a module of
    # another Python version, and the last book, neither seen in training
    step = QualityClassifier(QualityParams(model=str(model)))
    texts = [(CORPUS / "code" / "python3.13" / "_compression.py").read_text(),
             sorted((CORPUS / "books").glob("*.txt"))[-1].read_text()]
    batch = pa.RecordBatch.from_pydict({"id": ["a", "b"], "source": ["x", "x"], "text": texts,
                                        "drop_reason": pa.nulls(2, pa.string()), "drop_step": pa.nulls(2, pa.string())})
    scores = step(batch, TaskContext("x", InputFile(0, "x", "x"))).column("quality_score").to_pylist()
    assert scores[0] < 0.5 < scores[1]


def test_eval_ledger_steps_max_docs_and_lowercase(inputs, tmp_path, capsys, caplog):
    model = tmp_path / "m.bin"
    rc = cli.main(["quality", "train", "--positive", str(inputs["jsonl"]), "--negative", str(inputs["ledger"]),
                   "--ledger-steps", "code_quality", "--max-docs", "60", "--lowercase", "-o", str(model),
                   "--epochs", "3", "--dim", "16", "--seed", "5"])
    out = capsys.readouterr().out
    n_steps = sum(1 for s in pa.ipc.open_file(str(next(inputs["ledger"].rglob("*.arrow")))).read_all()
                  .column("step").to_pylist() if s == "code_quality")
    assert rc == 0 and f"read 60 positive and {min(60, n_steps)} negative documents" in out
    assert json.loads((tmp_path / "m.json").read_text())["preprocess"]["lowercase"] is True
    assert quality.Scorer.load(str(model)).lowercase
    rc = cli.main(["quality", "eval", "--model", str(model), "--positive", str(inputs["whole"]),
                   "--negative", str(inputs["parquet"]), "--text-field", "content"])
    out = capsys.readouterr().out
    assert rc == 0 and "3 positive +" in out and "accuracy" in out and "ROC AUC" in out
    # whole Gutenberg books, stripped and split as text_files does
    from operators.readers.books import split_text, strip_gutenberg

    pieces = sum(len(split_text(strip_gutenberg(p.read_text(encoding="utf-8").replace("\r\n", "\n"))[0], 3000))
                 for p in inputs["whole"].iterdir())
    rc = cli.main(["quality", "eval", "--model", str(model), "--positive", str(inputs["whole"]), "--gutenberg",
                   "--split-chars", "3000", "--negative", str(inputs["ledger"])])
    assert rc == 0 and f"{pieces} positive +" in capsys.readouterr().out
    # one document per line
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(" ".join(p.split()) for p in sorted((CORPUS / "books").glob("*.txt"))[-1]
                               .read_text().split("\n\n")[200:230] if p.strip()))
    rc = cli.main(["quality", "eval", "--model", str(model), "--positive", str(lines), "--txt-lines",
                   "--negative", str(inputs["ledger"])])
    n_lines = len(lines.read_text().splitlines())
    assert rc == 0 and f"{n_lines} positive +" in capsys.readouterr().out and n_lines > 20
    # a ledger whose texts are cut says so
    short = tmp_path / "short"
    short.mkdir()
    t = pa.ipc.open_file(str(next(inputs["ledger"].rglob("*.arrow")))).read_all()
    heads = pa.array([h[:300] for h in t.column("text_head").to_pylist()], pa.string())
    cut = t.set_column(t.column_names.index("text_head"), "text_head", heads)
    with ipc.new_file(str(short / "part-00000.arrow"), cut.schema) as w:
        w.write_table(cut)
    with caplog.at_level("WARNING", logger="smelter.quality"):
        rc = cli.main(["quality", "eval", "--model", str(model), "--positive", str(inputs["whole"]),
                       "--negative", str(short)])
    assert rc == 0 and "ledger texts are cut" in caplog.text and "output.ledger_text_chars" in caplog.text


@pytest.mark.parametrize("argv, message", [
    (["train", "--positive", "NOPE.txt", "--negative", "{ledger}", "-o", "{tmp}/m.bin"], "NOPE.txt: no such file"),
    (["train", "--positive", "{tmp}/data.csv", "--negative", "{ledger}", "-o", "{tmp}/m.bin"],
     "unknown input format"),
    (["train", "--positive", "{tmp}/bad.jsonl", "--negative", "{ledger}", "-o", "{tmp}/m.bin"],
     "bad.jsonl: line 2: invalid JSON"),
    (["train", "--positive", "{tmp}/one.txt", "--negative", "{ledger}", "-o", "{tmp}/m.bin"],
     "positives: only 1 group(s)"),
    (["train", "--positive", "{jsonl}", "--negative", "{ledger}", "-o", "{tmp}/data.csv/m.bin"],
     "cannot create folder"),
    (["train", "--positive", "{jsonl}", "--negative", "{ledger}", "-o", "{tmp}/m.bin", "--holdout", "1.5"],
     "--holdout 1.5: must be between 0 and 1"),
    (["train", "--positive", "{jsonl}", "--negative", "{ledger}", "-o", "{tmp}/m.bin", "--label", "hq"],
     "fastText labels look like __label__name"),
    (["train", "--positive", "{tmp}/empty", "--negative", "{ledger}", "-o", "{tmp}/m.bin"],
     "no .txt, .jsonl, .parquet or .arrow file"),
    (["eval", "--model", "{tmp}/missing.bin", "--positive", "{jsonl}", "--negative", "{ledger}"],
     "missing.bin: no such file"),
    (["eval", "--model", "{tmp}/data.csv", "--positive", "{jsonl}", "--negative", "{ledger}"],
     "cannot load fastText model"),
])
def test_user_mistakes_are_one_line_errors(inputs, tmp_path, capsys, argv, message):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    (tmp_path / "one.txt").write_text("A single document is a single group.")
    (tmp_path / "empty").mkdir()
    fill = {"tmp": str(tmp_path), "ledger": str(inputs["ledger"]), "jsonl": str(inputs["jsonl"])}
    rc = cli.main(["quality", *[a.format(**fill) for a in argv]])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("smelter: error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_help_and_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["quality", "train", "--help"])
    out = capsys.readouterr().out
    assert "ledger_text_chars" in out and "--positive" in out and "--debug" in out
    args = cli.parser().parse_args(["quality", "train", "--positive", "a", "--negative", "b", "-o", "m.bin"])
    for key, value in quality.TRAIN_DEFAULTS.items():
        assert getattr(args, key) == value, key
    assert args.max_chars == quality.DEFAULT_MAX_CHARS and args.threads == 1 and args.holdout == 0.1
