"""The FineWeb filter chain, smelter's steps beside datatrove's, on the same extracted pages, one process.

Chain: langid (English at 0.65), gopher_repetition, gopher_quality, c4_quality (FineWeb's variant, no
terminal-punctuation rule), fineweb_quality, pii. Every step sees every document (no document leaves
the chain), so each step's time is over the same input for both implementations; the chain's time is
their sum. smelter's steps run on Arrow batches of 100 rows, as in a pipeline; datatrove's run its
``filter``/``format`` per ``Document``.

The documents: the main text of every page of ../shared/corpus/web (trafilatura, FineWeb's settings),
extracted once and cached in ``<workdir>/docs.arrow``. ``--passes N`` runs everything N times in one
process: pass 1 starts with cold caches (smelter's word cache, spaCy's), later passes are warm. Both
implementations are timed pass by pass, interleaved, so machine noise hits both.

    .venv/bin/python bench/filters.py [--passes 2] [--workdir /tmp/smelter-bench-filters]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.base import InputFile, TaskContext  # noqa: E402
from operators.writers import read_arrow, write_arrow  # noqa: E402

STEPS = ["langid", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality", "pii"]


def documents(workdir: Path) -> list[str]:
    cache = workdir / "docs.arrow"
    if not cache.exists():
        from tests.conftest import WEB, extract_texts

        docs = extract_texts(str(WEB / "*.warc.gz"))
        workdir.mkdir(parents=True, exist_ok=True)
        write_arrow(str(cache), pa.table({"text": [d["text"] for d in docs]}), "zstd")
    return read_arrow(str(cache)).column("text").to_pylist()


def ours() -> dict:
    from operators.filters.heuristic import (
        C4Quality,
        C4QualityParams,
        FineWebQuality,
        FineWebQualityParams,
        GopherQuality,
        GopherQualityParams,
        GopherRepetition,
        GopherRepetitionParams,
    )
    from operators.langid import LangId, LangIdParams
    from operators.pii import Pii, PiiParams

    steps = {
        "langid": LangId(LangIdParams(languages=["en"], min_score=0.65)),
        "gopher_repetition": GopherRepetition(GopherRepetitionParams()),
        "gopher_quality": GopherQuality(GopherQualityParams()),
        "c4_quality": C4Quality(C4QualityParams(filter_no_terminal_punct=False)),
        "fineweb_quality": FineWebQuality(FineWebQualityParams()),
        "pii": Pii(PiiParams()),
    }
    for s in steps.values():
        s.ensure_setup()
    ctx = TaskContext(source="web", input=InputFile(0, "bench", "bench"))

    def run(name: str, texts: list[str]) -> int:
        step, kept = steps[name], 0
        for start in range(0, len(texts), 100):
            chunk = texts[start:start + 100]
            n = len(chunk)
            batch = pa.RecordBatch.from_pydict({
                "id": [str(i) for i in range(n)], "text": pa.array(chunk, pa.string()),
                "drop_reason": pa.nulls(n, pa.string()), "drop_step": pa.nulls(n, pa.string())})
            kept += step(batch, ctx).column("drop_reason").null_count
        return kept

    return {name: (lambda texts, name=name: run(name, texts)) for name in steps}


def theirs() -> dict:
    from datatrove.data import Document
    from datatrove.pipeline.filters import LanguageFilter
    from datatrove.pipeline.formatters import PIIFormatter

    from tests.reference import local_lid, quality_filters

    with local_lid():
        langid = LanguageFilter(languages=["en"], language_threshold=0.65)
        langid.model.model  # noqa: B018  load the model now, not in the first timed pass
    gopher_rep, gopher_quality, c4, fineweb = quality_filters()
    filters = {"langid": langid, "gopher_repetition": gopher_rep, "gopher_quality": gopher_quality,
               "c4_quality": c4, "fineweb_quality": fineweb}
    pii = PIIFormatter()

    def run_filter(f, texts: list[str]) -> int:
        kept = 0
        for i, t in enumerate(texts):
            r = f.filter(Document(text=t, id=str(i)))
            kept += r is True or (isinstance(r, bool) and r)
        return kept

    def run_pii(texts: list[str]) -> int:
        for t in texts:
            pii.format(t)
        return len(texts)

    out = {name: (lambda texts, f=f: run_filter(f, texts)) for name, f in filters.items()}
    out["pii"] = run_pii
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/smelter-bench-filters")
    args = ap.parse_args()
    texts = documents(Path(args.workdir))
    impls = {"smelter": ours(), "datatrove": theirs()}
    print(f"{len(texts)} documents, {sum(map(len, texts)) / len(texts) / 1000:.1f} KB mean, "
          f"{os.cpu_count()} cores, one process\n")
    times = {(impl, p, s): 0.0 for impl in impls for p in range(args.passes) for s in STEPS}
    kept = {}
    for p in range(args.passes):
        for step in STEPS:
            for impl, fns in impls.items():  # interleaved: noise hits both
                t0 = time.perf_counter()
                kept[impl, step] = fns[step](texts)
                times[impl, p, step] = time.perf_counter() - t0
    n = len(texts)
    header = "| step | kept (smelter / datatrove) |" + "".join(
        f" pass {p + 1}: smelter ms/doc | datatrove ms/doc | speed-up |" for p in range(args.passes))
    print(header)
    print("|" + "---|" * (2 + 3 * args.passes))
    for step in STEPS + ["chain"]:
        steps = STEPS if step == "chain" else [step]
        row = f"| {step} | " + ("" if step == "chain" else f"{kept['smelter', step]} / {kept['datatrove', step]}") + " |"
        for p in range(args.passes):
            a = sum(times["smelter", p, s] for s in steps) / n * 1000
            b = sum(times["datatrove", p, s] for s in steps) / n * 1000
            row += f" {a:.2f} | {b:.2f} | {b / a:.1f}x |"
        print(row)


if __name__ == "__main__":
    main()
