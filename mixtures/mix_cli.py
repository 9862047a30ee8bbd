"""``smelter mix MIXTURE.yaml``: plan the curriculum and write the training manifest and mixture.html."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

log = logging.getLogger(__name__)

EPILOG = """\
The mixture YAML:
  name: demo
  tokens: [out/mix-tokens/tokens.json]       one or more `smelter tokenize` manifests
  seq_len: 256                               a sample is seq_len + 1 tokens
  budget_tokens: 4M                          training tokens in all (K, M, B, T suffixes)
  seed: 1234
  max_epochs: 4                              cap on passes over any document (or {source: cap})
  heldout: 0.01                              share of each source's documents kept out for evaluation
  phases:                                    in training order; shares and weights each sum to 1
    - {name: main, share: 0.8, weights: {web: 0.3, code: 0.2, books: 0.5}}
    - name: anneal
      share: 0.2
      where: quality_score >= 0.5            a bucket of documents (numeric shard columns, `and`)
      weights: {books: 0.7, web: {weight: 0.3, where: quality_score >= 0.3}}
  output: out/demo-plan                      default for --output

Writes DIR/train_manifest.json (schema 1), DIR/phase-NN/*.npy (Megatron GPTDataset and
BlendedDataset index arrays), DIR/heldout/*.npy (the held-out documents' samples),
DIR/documents/<source>.arrow and DIR/mixture.html. The same inputs and
seed give byte-identical files.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("mixture", metavar="MIXTURE.yaml", help="the mixture spec")
    p.add_argument("--output", metavar="DIR", help="plan folder (default: the spec's output, else out/<name>-plan)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value by its dotted key, e.g. --set phases.1.share=0.3 (repeatable)")
    p.add_argument("--format", choices=("text", "json", "md"), default="text",
                   help="how to print the plan summary (default text)")
    p.add_argument("--no-report", action="store_true", help="do not write mixture.html")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def summary_rows(manifest: dict) -> list[list[str]]:
    rows = []
    for phase in manifest["phases"]:
        for name, s in phase["sources"].items():
            rows.append([phase["name"], name, f"{s['weight']:g}", s["where"] or "", f"{s['samples']:,}",
                         f"{s['tokens']:,}", f"{s['documents']:,}", f"{s['epochs']:.2f}"])
    return rows


HEADER = ["phase", "source", "weight", "where", "samples", "tokens", "documents", "epochs"]


def main(args: argparse.Namespace) -> int:
    from mixtures import plan as planmod
    from mixtures import spec as specmod

    spec = specmod.load(args.mixture, args.overrides)
    out = args.output or spec.output or os.path.join("out", f"{spec.name}-plan")
    t0 = time.time()
    manifest = planmod.build(spec, out)
    seconds = time.time() - t0
    report = None
    if not args.no_report:
        try:
            from mixtures.reports.mixture_report import write_mixture_report

            report = write_mixture_report(out)
        except Exception as e:  # the plan is made; a report failure must not hide it
            log.warning("mixture.html not written: %s", e, exc_info=args.debug)
    rows = summary_rows(manifest)
    if args.format == "json":
        json.dump({"plan": os.path.abspath(out), "seconds": round(seconds, 3), "samples": manifest["samples"],
                   "tokens": manifest["tokens"], "phases": manifest["phases"],
                   "sources": {k: {x: v[x] for x in ("documents", "tokens", "epochs", "max_epochs", "samples")}
                               for k, v in manifest["sources"].items()}}, sys.stdout, indent=1)
        print()
        return 0
    if args.format == "md":
        print(f"## Training plan `{spec.name}`: {manifest['samples']:,} samples of {manifest['seq_len'] + 1} tokens\n")
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "|".join("---" if i < 4 else "---:" for i in range(len(HEADER))) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return 0
    print(f"smelter: planned {manifest['samples']:,} samples x {manifest['seq_len']} tokens "
          f"({manifest['tokens']:,} training tokens, {len(manifest['phases'])} phases) in {seconds:.1f}s")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    line = "  " + "  ".join(h.ljust(w) if i < 4 else h.rjust(w) for i, (h, w) in enumerate(zip(HEADER, widths, strict=True)))
    print(line)
    for r in rows:
        print("  " + "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    for name, s in manifest["sources"].items():
        print(f"  {name}: {s['documents']:,} documents, {s['tokens']:,} tokens; read at most {s['epochs']:.2f} "
              f"times per document (cap {s['max_epochs']:g})")
    print(f"  training manifest: {os.path.join(os.path.abspath(out), planmod.MANIFEST_FILE)}")
    if report:
        print(f"  mixture report:    {os.path.abspath(report)}")
    return 0
