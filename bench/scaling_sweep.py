"""A real scaling sweep on CPU: the bundled trainer at several model sizes and compute budgets on the
demo corpus, the law fitted on it, and a held-out larger run predicted.

    .venv/bin/python bench/scaling_sweep.py [--sweep scaling/examples/sweep.yaml] [--bootstrap 200]

Needs ``make demo``'s pipeline run (out/mix); builds what is missing from it:

1. The tokens: out/mix tokenized with ``scaling/examples/tokenizer.yaml``, a 1,024-entry BPE trained on the
   corpus (5.7M tokens) -> out/scaling-tokens. The demo's own 16,384-entry vocabulary makes the output
   projection most of these small models' N and FLOPs, and every run ends near the unigram loss.
2. The plan: ``scaling/examples/mixture.yaml`` over those tokens, seq_len 128, 8M tokens -> out/scaling-plan.
3. The sweep: ``scaling/examples/sweep.yaml`` (IsoFLOP curves of four sizes, 14K-320K matmul parameters, at
   1e11, 3e11 and 1e12 FLOPs, plus one held-out run at 2e12; each a ``train.pretrain`` run in one of two
   worker processes) -> out/scaling-sweep; finished runs are not rerun, so a second call only refits.
4. The fit: Approach 3 with bootstrap intervals and Approach 2, FIT.json and scaling.svg in the sweep
   folder; the held-out run's predicted L(N, D) against its measured loss.

Prints the results as a markdown table, the fit, the held-out check and the wall time (about 20 minutes
for the sweep on 2 CPU cores shared with other jobs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "scaling", "examples", "tokenizer.yaml"))
    ap.add_argument("--run", default=os.path.join(ROOT, "out", "mix"), help="the pipeline run to tokenize")
    ap.add_argument("--mixture", default=os.path.join(ROOT, "scaling", "examples", "mixture.yaml"))
    ap.add_argument("--sweep", default=os.path.join(ROOT, "scaling", "examples", "sweep.yaml"))
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a sweep value, e.g. --set workers=1")
    args = ap.parse_args()

    from mixtures import plan as planmod
    from mixtures import spec as mixspec
    from scaling import sweep as sw
    from scaling.cli import format_fit
    from scaling.fit import fit_runs, read_results
    from scaling.laws import Law
    from scaling.plot import plot_svg

    started = time.perf_counter()
    mixture = mixspec.load(args.mixture)
    for manifest in mixture.tokens:
        if not os.path.exists(manifest):
            cmd = [sys.executable, "-m", "pipelines.cli", "tokenize", args.run, "--tokenizer", args.tokenizer,
                   "--output", os.path.dirname(manifest), "--master", "none"]
            print(f"tokenizing {args.run} -> {os.path.dirname(manifest)}", flush=True)
            subprocess.run(cmd, check=True)
    if not os.path.exists(os.path.join(mixture.output, "train_manifest.json")):
        print(f"building the plan {mixture.output} from {args.mixture}", flush=True)
        planmod.build(mixture, mixture.output)
    sweep = sw.load(args.sweep, args.overrides)
    print(sw.describe(sweep), flush=True)
    before = sw.read_results(sweep.output)  # runs finished by an earlier call are not trained again
    t0 = time.perf_counter()
    rows = sw.run_sweep(sweep, say=lambda text: print(text, flush=True))
    sweep_s = time.perf_counter() - t0
    ran = [r for r in rows if r.get("seconds") is not None and before.get(r["name"]) != r]

    runs = read_results(sweep.output)
    t1 = time.perf_counter()
    result = fit_runs(runs, bootstrap=args.bootstrap)
    fit_s = time.perf_counter() - t1
    svg = os.path.join(sweep.output, "scaling.svg")
    result["plot"] = svg
    with open(os.path.join(sweep.output, "FIT.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    lw = result["law"]
    law = Law(**{k: lw[k] for k in ("E", "A", "B", "alpha", "beta")}, name="fit")
    plot_svg(runs, law, svg, title=f"demo sweep: {result['runs']} runs + held-out, fitted law")

    print()
    print(sw.markdown_table(rows))
    print()
    print(format_fit(result))
    print()
    fitted = [r for r in runs if not r.heldout]
    budgets = sorted({r.budget for r in fitted if r.budget})
    print(f"runs fitted: {len(fitted)} over {len(budgets)} compute budgets; held out: "
          f"{sum(r.heldout for r in runs)}")
    for h in result["heldout"]:
        ok = "within" if abs(h["relative_error"]) < 0.05 else "NOT within"
        print(f"held-out {h['name']}: N {h['params']:.3g}, D {h['tokens']:.3g}: predicted {h['predicted']:.4f}, "
              f"measured {h['measured']:.4f}, error {100 * h['relative_error']:+.2f}% ({ok} 5%)")
    print(f"sweep wall time {sweep_s / 60:.1f} min for {len(ran)} runs trained now "
          f"(sum of their run times {sum(r['seconds'] for r in ran) / 60:.1f} min, {sweep.spec.workers} at a time); "
          f"fit {fit_s:.0f} s; total {(time.perf_counter() - started) / 60:.1f} min")
    print(f"load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"plot: {svg}\nfit: {os.path.join(sweep.output, 'FIT.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
