"""``smelter quality``: train and evaluate the fastText classifiers that ``quality_classifier`` runs.

    smelter quality train --positive PATH... --negative PATH... -o model.bin
    smelter quality eval --model model.bin --positive PATH... --negative PATH...

Inputs (any mix, files or folders of them):

* ``.txt``: one document per file (``--txt-lines``: one document per line; ``--gutenberg``: strip
  Project Gutenberg's header, footer and licence first);
* ``.jsonl`` / ``.jsonl.gz``: one JSON object per line, the text in ``--text-field`` (default ``text``);
* ``.parquet`` / ``.arrow``: a table with a ``text`` column (``--text-field``), such as a run's
  ``shards/<source>/``; or a run's ``ledger/<source>/``, whose rows carry ``text_head`` instead: only
  the head of each dropped text, ``output.ledger_text_chars`` characters of it (300 by default), so a
  pipeline whose drops should become negatives must keep full texts with a large
  ``output.ledger_text_chars``. ``--ledger-steps`` keeps the ledger rows of some steps only.

``--split-chars N`` cuts long documents into pieces as the ``text_files`` reader's ``max_chars`` does.
``train`` holds out whole groups (a row's ``path`` when the input has one, so the chunks of one book stay
together; else the document), trains on the rest, prints train/held-out sizes, accuracy and ROC AUC,
and writes the model and ``<model>.json`` (metrics, parameters, preprocessing) beside it. Training is
deterministic: one fastText thread and a fixed seed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pipelines.errors import UserError

log = logging.getLogger("smelter.quality")

_TABLE_EXT = (".parquet", ".arrow", ".feather", ".ipc")
_JSONL_EXT = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")


@dataclass
class Doc:
    text: str
    group: str  # documents of one group are held out together


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="quality_command", required=True, metavar="{train,eval}")
    t = sub.add_parser(
        "train", help="train a fastText quality classifier (positives = high quality)",
        description="Train a fastText classifier of high-quality (positive) against other (negative) "
                    "documents, DCLM-style; hold out a share of the data and print accuracy and ROC AUC.",
        epilog="A run's ledger (ledger/<source>/) keeps only the first output.ledger_text_chars characters "
               "of each dropped text (text_head, 300 by default): to train on a pipeline's drops, run it "
               "with e.g. --set output.ledger_text_chars=100000.")
    _inputs(t)
    t.add_argument("-o", "--output", required=True, metavar="MODEL.bin",
                   help="where to write the model; its metrics go to MODEL.json beside it")
    t.add_argument("--holdout", type=float, default=0.1, help="share of the documents held out (default 0.1)")
    t.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of fastText (default 0)")
    # the same defaults as operators.quality.TRAIN_DEFAULTS (a test keeps them equal; importing that
    # module here would slow every `smelter --help`)
    t.add_argument("--epochs", type=int, default=10, help="fastText epochs (default %(default)s)")
    t.add_argument("--lr", type=float, default=0.5, help="fastText learning rate (default %(default)s)")
    t.add_argument("--word-ngrams", type=int, default=2,
                   help="word n-gram features (default %(default)s: words and bigrams)")
    t.add_argument("--dim", type=int, default=100, help="vector size (default %(default)s)")
    t.add_argument("--min-count", type=int, default=2, help="ignore words seen fewer times (default %(default)s)")
    t.add_argument("--bucket", type=int, default=200_000,
                   help="hash buckets for word n-grams (default %(default)s; the model holds "
                        "(words + buckets) x dim floats)")
    t.add_argument("--max-chars", type=int, default=100_000,
                   help="cut documents to this many characters before training and scoring (default %(default)s)")
    t.add_argument("--lowercase", action="store_true",
                   help="lower-case texts before training and scoring (recorded in MODEL.json; DCLM does not)")
    t.add_argument("--label", default=None, help="label of the positives (default __label__hq, as DCLM)")
    t.add_argument("--negative-label", default=None, help="label of the negatives (default __label__cc)")
    t.add_argument("--threads", type=int, default=1,
                   help="fastText threads (default 1: more are faster but not deterministic)")
    t.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")

    e = sub.add_parser("eval", help="score labelled documents with a fastText classifier",
                       description="Print accuracy and ROC AUC of a fastText quality classifier on "
                                   "positive and negative documents (any fastText .bin, e.g. DCLM's).")
    _inputs(e)
    e.add_argument("--model", required=True, help="the fastText model (.bin or .ftz)")
    e.add_argument("--label", default=None,
                   help="the high-quality label (default: from MODEL.json, else __label__hq)")
    e.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--positive", nargs="+", required=True, metavar="PATH",
                   help="high-quality documents: .txt, .jsonl(.gz), .parquet, .arrow files or folders of them")
    p.add_argument("--negative", nargs="+", required=True, metavar="PATH",
                   help="other documents, same formats")
    p.add_argument("--text-field", default="text", help="the text field or column (default text)")
    p.add_argument("--txt-lines", action="store_true", help=".txt files hold one document per line")
    p.add_argument("--ledger-steps", default=None, metavar="STEP,...",
                   help="from ledger files, keep only the rows these steps dropped")
    p.add_argument("--gutenberg", action="store_true",
                   help=".txt files are Project Gutenberg books: remove their header, footer and licence "
                        "(as the text_files reader's strip: gutenberg)")
    p.add_argument("--split-chars", type=int, default=None, metavar="N",
                   help="split longer documents into pieces of at most N characters at paragraph boundaries "
                        "(as text_files' max_chars); the pieces of one document are held out together")
    p.add_argument("--max-docs", type=int, default=None, metavar="N",
                   help="use at most N documents of each class (a seeded random sample, after splitting)")


# --------------------------------------------------------------------------------------------------
# Reading inputs


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        out = []
        for root, _dirs, names in os.walk(path):
            for name in names:
                full = os.path.join(root, name)
                if _kind(full) is not None:
                    out.append(full)
        if not out:
            raise UserError(f"{path}: no .txt, .jsonl, .parquet or .arrow file in this folder")
        return sorted(out)
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or folder")
    if _kind(path) is None:
        raise UserError(f"{path}: unknown input format (expected .txt, .jsonl(.gz), .parquet or .arrow)")
    return [path]


def _kind(path: str) -> str | None:
    low = path.lower()
    if low.endswith(".txt"):
        return "txt"
    if low.endswith(_JSONL_EXT):
        return "jsonl"
    if low.endswith(_TABLE_EXT):
        return "table"
    return None


def read_documents(paths: list[str], text_field: str = "text", txt_lines: bool = False,
                   ledger_steps: list[str] | None = None, gutenberg: bool = False,
                   split_chars: int | None = None) -> list[Doc]:
    """Every non-empty document of ``paths``; a damaged file is a :class:`UserError` naming it."""
    docs: list[Doc] = []
    for path in paths:
        for f in _files(path):
            try:
                docs.extend(_read_file(f, text_field, txt_lines, ledger_steps, gutenberg))
            except UserError:
                raise
            except (OSError, ValueError, EOFError, UnicodeDecodeError) as e:
                raise UserError(f"{f}: unreadable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                                ) from None
            except Exception as e:  # pyarrow's errors
                if type(e).__module__.startswith("pyarrow"):
                    raise UserError(f"{f}: unreadable: {str(e).splitlines()[0]}") from None
                raise
    if split_chars:
        from operators.readers.books import split_text

        docs = [Doc(piece, d.group) for d in docs for piece in split_text(d.text, split_chars)]
    return docs


def _read_file(path: str, text_field: str, txt_lines: bool, ledger_steps: list[str] | None,
               gutenberg: bool = False) -> Iterator[Doc]:
    kind = _kind(path)
    if kind == "txt":
        with open(path, "rb") as fh:
            raw = fh.read()
        from operators.readers.books import decode, strip_gutenberg

        text, _enc = decode(raw, "auto")
        if gutenberg:
            text = strip_gutenberg(text)[0]
        if txt_lines:
            for i, line in enumerate(text.splitlines()):
                if line.strip():
                    yield Doc(line, f"{path}:{i}")
        elif text.strip():
            yield Doc(text, path)
        return
    if kind == "jsonl":
        opener = gzip.open if path.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise UserError(f"{path}: line {lineno}: invalid JSON: {e}") from None
                text = obj.get(text_field) if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    raise UserError(f"{path}: line {lineno}: no string field '{text_field}'")
                if text.strip():
                    yield Doc(text, str(obj.get("path") or f"{path}:{lineno}"))
        return
    table = _read_table(path)
    names = table.column_names
    if text_field in names:
        column = text_field
    elif "text_head" in names and "reason" in names:  # a run's ledger
        column = "text_head"
        if ledger_steps is not None:
            import pyarrow.compute as pc

            table = table.filter(pc.is_in(table.column("step"), value_set=_string_array(ledger_steps)))
        lengths = table.column("length").to_pylist()
        heads = table.column("text_head").to_pylist()
        cut = sum(1 for n, h in zip(lengths, heads, strict=True) if h is not None and n > len(h))
        if cut:
            log.warning("%s: %d of %d ledger texts are cut to their first characters "
                        "(run the pipeline with a larger output.ledger_text_chars)", path, cut, table.num_rows)
    else:
        raise UserError(f"{path}: no column '{text_field}' (columns: {', '.join(names[:12])})")
    texts = table.column(column).to_pylist()
    groups = table.column("path").to_pylist() if "path" in names else [None] * len(texts)
    for i, (text, group) in enumerate(zip(texts, groups, strict=True)):
        if isinstance(text, str) and text.strip():
            yield Doc(text, str(group) if group else f"{path}:{i}")


def _string_array(values: list[str]):
    import pyarrow as pa

    return pa.array(values, pa.string())


def _read_table(path: str):
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    if path.lower().endswith(".parquet"):
        return pq.read_table(path)
    try:
        with pa.memory_map(path) as source:
            return ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        with pa.memory_map(path) as source:
            return ipc.open_stream(source).read_all()


def _sample(docs: list[Doc], n: int | None, seed: int) -> list[Doc]:
    if n is None or len(docs) <= n:
        return docs
    rng = random.Random(seed)
    keep = sorted(rng.sample(range(len(docs)), n))
    return [docs[i] for i in keep]


def _load(args: argparse.Namespace) -> tuple[list[Doc], list[Doc]]:
    if args.max_docs is not None and args.max_docs < 1:
        raise UserError(f"--max-docs {args.max_docs}: must be at least 1")
    if args.split_chars is not None and args.split_chars < 200:
        raise UserError(f"--split-chars {args.split_chars}: must be at least 200")
    steps = [s.strip() for s in args.ledger_steps.split(",") if s.strip()] if args.ledger_steps else None
    read = {"text_field": args.text_field, "txt_lines": args.txt_lines, "ledger_steps": steps,
            "gutenberg": args.gutenberg, "split_chars": args.split_chars}
    pos = read_documents(args.positive, **read)
    neg = read_documents(args.negative, **read)
    seed = getattr(args, "seed", 0)
    pos, neg = _sample(pos, args.max_docs, seed), _sample(neg, args.max_docs, seed + 1)
    if not pos:
        raise UserError(f"--positive {' '.join(args.positive)}: no non-empty document")
    if not neg:
        raise UserError(f"--negative {' '.join(args.negative)}: no non-empty document")
    return pos, neg


# --------------------------------------------------------------------------------------------------
# Commands


def _train(args: argparse.Namespace) -> int:
    from operators import quality

    if not 0.0 < args.holdout < 1.0:
        raise UserError(f"--holdout {args.holdout}: must be between 0 and 1")
    out = args.output
    if os.path.isdir(out):
        raise UserError(f"-o {out}: is a folder; name the model file, e.g. {os.path.join(out, 'model.bin')}")
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UserError(f"-o {out}: cannot create folder {parent}: {e.strerror}") from None
    pos, neg = _load(args)
    print(f"read {len(pos)} positive and {len(neg)} negative documents")
    for name in ("epochs", "dim", "bucket", "max_chars", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if args.lr <= 0:
        raise UserError(f"--lr {args.lr}: must be positive")
    options = {"epochs": args.epochs, "lr": args.lr, "word_ngrams": args.word_ngrams, "dim": args.dim,
               "min_count": args.min_count, "bucket": args.bucket, "max_chars": args.max_chars}
    options.update({k: v for k, v in (("label", args.label), ("negative_label", args.negative_label))
                    if v is not None})
    t0 = time.time()
    try:
        result = quality.train([d.text for d in pos], [d.text for d in neg],
                               positive_groups=[d.group for d in pos], negative_groups=[d.group for d in neg],
                               holdout=args.holdout, seed=args.seed, lowercase=args.lowercase,
                               threads=args.threads, **options)
    except ValueError as e:
        raise UserError(f"quality train: {e}") from None
    m = result.metrics
    print(f"train: {m['train']['positive']} positive + {m['train']['negative']} negative documents; "
          f"held out: {m['heldout']['positive']} positive + {m['heldout']['negative']} negative")
    print(f"held-out accuracy {m['heldout']['accuracy']:.4f}  ROC AUC {m['heldout']['roc_auc']:.4f}  "
          f"(train accuracy {m['train']['accuracy']:.4f}, {time.time() - t0:.1f} s)")
    meta = quality.metadata_path(out)
    try:
        result.model.save_model(out)
        with open(meta, "w") as fh:
            json.dump(result.metadata(), fh, indent=1, sort_keys=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"-o {out}: cannot write the model: {e}") from None
    print(f"wrote {out} and {meta}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from operators import quality

    if not os.path.isfile(args.model):
        raise UserError(f"--model {args.model}: no such file")
    pos, neg = _load(args)
    try:
        scorer = quality.Scorer.load(args.model, label=args.label)
    except FileNotFoundError as e:  # AssetError: not a fastText model
        raise UserError(str(e)) from None
    except ValueError as e:
        raise UserError(f"--model {args.model}: {e}") from None
    t0 = time.time()
    m = quality.evaluate(scorer, [d.text for d in pos], [d.text for d in neg])
    print(f"{m['positive']} positive + {m['negative']} negative documents: accuracy {m['accuracy']:.4f}  "
          f"ROC AUC {m['roc_auc']:.4f}  ({time.time() - t0:.1f} s)")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.quality_command == "train":
        return _train(args)
    if args.quality_command == "eval":
        return _eval(args)
    raise UserError(f"quality: unknown command {args.quality_command}")
