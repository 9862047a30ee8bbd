"""``smelter trace PLAN --sample N | --doc ID``: which documents make up a training sample, and which
samples (and phases) a document feeds."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", metavar="PLAN", help="a training plan folder (train_manifest.json)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--sample", type=int, metavar="N", help="training sample N (0-based, over all phases)")
    which.add_argument("--doc", metavar="ID", help="a document id (as in the pipeline run's shards)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def location(plan, source: str, doc: dict) -> str | None:
    """A document's URL or path (``repo/path`` for code)."""
    column = plan.manifest["sources"][source].get("location_column")
    where = doc.get(column) if column else None
    return f"{doc['repo']}/{where}" if where and doc.get("repo") else where


def trace_sample(plan, n: int) -> dict:
    phase, source, row = plan.locate(n)
    docs = []
    for piece in plan.pieces(n):
        doc = plan.document(piece.source, piece.document)
        docs.append({"id": doc["id"], "source": piece.source, "location": location(plan, piece.source, doc),
                     "document_tokens": doc["tokens"], "tokens": [piece.start, piece.start + piece.length],
                     "sample_positions": [piece.position, piece.position + piece.length],
                     "quality_score": doc.get("quality_score")})
    return {"sample": n, "phase": phase["name"], "source": source, "tokens": plan.seq_len + 1,
            "first_training_token": n * plan.seq_len, "documents": docs}


def trace_doc(plan, doc_id: str) -> dict:
    source, number = plan.find_document(doc_id)
    doc = plan.document(source, number)
    samples = plan.samples_of(source, number)
    phases: dict[str, int] = {}
    for s in samples:
        phases[s["phase"]] = phases.get(s["phase"], 0) + 1
    return {"id": doc_id, "source": source, "location": location(plan, source, doc),
            "document_tokens": doc["tokens"], "quality_score": doc.get("quality_score"),
            "samples": samples, "samples_per_phase": phases}


def main(args: argparse.Namespace) -> int:
    from mixtures.reader import TrainingPlan
    from pipelines.errors import UserError

    plan = TrainingPlan(args.plan)
    if args.sample is not None:
        if not 0 <= args.sample < plan.num_samples:
            raise UserError(f"--sample {args.sample}: the plan has samples 0 to {plan.num_samples - 1:,}")
        out = trace_sample(plan, args.sample)
    else:
        out = trace_doc(plan, args.doc)
    if args.format == "json":
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    if args.sample is not None:
        print(f"sample {out['sample']:,} (phase {out['phase']}, source {out['source']}): {out['tokens']} tokens "
              f"from training token {out['first_training_token']:,}")
        for d in out["documents"]:
            a, b = d["tokens"]
            print(f"  {d['id']}  {d['source']}  tokens {a:,}-{b:,} of {d['document_tokens']:,}  "
                  f"at {d['sample_positions'][0]}-{d['sample_positions'][1]}  {d['location'] or ''}")
        return 0
    per_phase = ", ".join(f"{k} {v:,}" for k, v in out["samples_per_phase"].items()) or "none"
    print(f"document {out['id']} ({out['source']}, {out['document_tokens']:,} tokens"
          f"{', ' + str(out['location']) if out['location'] else ''}): {len(out['samples']):,} samples ({per_phase})")
    for s in out["samples"]:
        print(f"  sample {s['sample']:,}  phase {s['phase']}  tokens {s['tokens'][0]:,}-{s['tokens'][1]:,}")
    return 0
