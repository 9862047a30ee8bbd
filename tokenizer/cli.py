"""``smelter tokenize RUN_DIR --tokenizer SPEC --output DIR``: a run's shards -> Megatron token files."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pipelines.errors import UserError

log = logging.getLogger(__name__)

EPILOG = """\
SPEC is one of:
  a tokenizer file or folder   tokenizer.json; vocab.json + merges.txt; encoder.json + vocab.bpe;
                               a tiktoken ranks file (short for {pretrained: PATH})
  a YAML file (*.yaml)         a spec as below; relative paths are relative to the file
  an inline YAML mapping       e.g. '{train: {vocab_size: 32000, sample_docs: 20000}}'

The spec (exactly one of train / pretrained):
  train: {vocab_size: 32000, sample_docs: 20000, min_frequency: 2, special_tokens: [...],
          max_doc_chars: 200000, seed: 0}
      a byte-level BPE trained with HF tokenizers on the sample_docs documents whose ids hash lowest,
      drawn across all sources
  pretrained: PATH
  pattern: gpt2            split pattern of a tiktoken ranks file: gpt2, cl100k or a regex
  special_tokens: [...]    default <|endoftext|> <|pad|> <|system|> <|user|> <|assistant|> <|tool|>
                           <|end_of_turn|>; added when missing
  eod: "<|endoftext|>"     appended after every document
  engine: auto             auto: tiktoken when it gives HF tokenizers' ids, else HF; or tiktoken / hf

Writes OUTPUT/tokenizer.json, OUTPUT/<source>/part-NNNNN.bin + .idx (Megatron-core indexed dataset:
one sequence per document, EOD appended, uint16 ids below 65,500 entries else int32) and
OUTPUT/tokens.json (tokenizer hash, vocab size, EOD id; per shard documents, tokens, sha256; totals).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("run_dir", metavar="RUN_DIR", help="a pipeline run's output folder (manifest.json, shards/)")
    p.add_argument("--tokenizer", required=True, metavar="SPEC",
                   help="a tokenizer file or folder, a spec YAML file, or an inline YAML mapping (see below)")
    p.add_argument("--output", required=True, metavar="DIR", help="where the token files go")
    p.add_argument("--master", default="local",
                   help="where to encode: `local` (default; also `none`): on this machine, a thread per core, "
                        "no JVM - Spark's local mode would only add its start-up; a Spark master URL "
                        "(spark://host:7077, yarn, or local[N] to exercise the Spark path): one Spark task per "
                        "shard")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="encoding threads per task (default: all cores with --master local, 1 on Spark)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def main(args: argparse.Namespace) -> int:
    from tokenizer import spec as specmod
    from tokenizer.job import tokenize_run

    if not os.path.isdir(args.run_dir):
        raise UserError(f"{args.run_dir}: no such run folder")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads: must be at least 1")
    spec = specmod.parse(args.tokenizer)
    result = tokenize_run(args.run_dir, spec, args.output, master=args.master, threads=args.threads)
    timing = result["_timing"]
    tok = result["tokenizer"]
    mb = timing["text_bytes"] / 1e6
    print(f"smelter: tokenized {result['totals']['documents']} documents into {result['totals']['tokens']} "
          f"tokens in {timing['seconds']:.1f}s (encoding {timing['encode_seconds']:.1f}s, "
          f"{mb / max(timing['encode_seconds'], 1e-9):.1f} MB/s of text)")
    print(f"  tokenizer: {tok['source']} ({tok['vocab_size']} entries, EOD {tok['eod_token']} = {tok['eod_id']}, "
          f"{tok['dtype']}, engine {tok['engine']})")
    for name, t in result["totals"]["sources"].items():
        print(f"  {name}: {t['shards']} shards, {t['documents']} documents, {t['tokens']} tokens")
    print(f"  outputs: {os.path.abspath(args.output)}/ (tokens.json, tokenizer.json, <source>/part-NNNNN.bin/.idx)",
          file=sys.stdout)
    return 0
