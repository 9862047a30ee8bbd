"""``smelter scaling``: plan a run's size from a scaling law, sweep small models, fit your own law.

    smelter scaling plan --flops 1e21 [--law chinchilla|epoch|FIT.json] [--inference-tokens 2e12] [--corpus out]
    smelter scaling sweep --config sweep.yaml [--set key=value] [--dry-run]
    smelter scaling fit RESULTS [--output FIT.json] [--plot scaling.svg] [--bootstrap 200]

``plan`` prints the compute-optimal N and D for the budget (closed form), the predicted loss, tokens per
parameter, Kaplan et al.'s allocation beside it, the inference-aware model when ``--inference-tokens``
is given, and how many tokens the project's own corpus holds (``tokens.json`` manifests under
``--corpus``) against D. ``sweep`` runs the ladder of a sweep YAML (see scaling/sweep.py), resumably.
``fit`` fits the law on a results table (results.jsonl / results.csv / a sweep folder), writes
FIT.json (usable as ``plan --law FIT.json``) and an SVG plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pipelines.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="scaling_command", required=True, metavar="{plan,sweep,fit}")
    pl = sub.add_parser("plan", help="compute-optimal model size and tokens for a compute budget",
                        description="N and D minimising L(N, D) = E + A/N^alpha + B/D^beta for C = 6 N D.")
    pl.add_argument("--flops", required=True, metavar="C",
                    help="training compute in FLOPs, e.g. 1e21, 5.76e23, or petaflop/s-days: 3pfd")
    pl.add_argument("--law", default="chinchilla", metavar="chinchilla|epoch|FIT.json",
                    help="the law: Hoffmann et al. 2022 Approach 3 (chinchilla, default), the Epoch AI refit "
                         "(epoch), or a FIT.json from `smelter scaling fit`")
    pl.add_argument("--inference-tokens", default="0", metavar="T",
                    help="tokens the model will serve: also print the smaller, longer-trained model of the same "
                         "loss that minimises training + inference compute (6ND + 2NT)")
    pl.add_argument("--corpus", default="out", metavar="DIR",
                    help="folder searched for `smelter tokenize` manifests (tokens.json) to compare D with "
                         "(default: ./out)")
    pl.add_argument("--json", action="store_true", help="print the numbers as JSON")
    pl.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    sw = sub.add_parser("sweep", help="run a ladder of model sizes x compute budgets with the bundled trainer",
                        description="Each run is a run of the bundled trainer (train.pretrain) on the sweep's plan, in "
                                    "`workers` worker processes; results go to "
                                    "<output>/results.jsonl and results.csv. Finished runs are not rerun.")
    sw.add_argument("--config", required=True, metavar="SWEEP.yaml", help="the sweep config")
    sw.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value by its dotted key, e.g. --set workers=2 (repeatable)")
    sw.add_argument("--dry-run", action="store_true", help="print the ladder (N, D, C, steps) and stop")
    sw.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    ft = sub.add_parser("fit", help="fit the law on a sweep's results; FIT.json and a plot",
                        description="Huber fit of log L = LSE(a - alpha log N, b - beta log D, e) (Approach 3) "
                                    "with bootstrap intervals, and the IsoFLOP minima (Approach 2).")
    ft.add_argument("results", metavar="RESULTS", help="results.jsonl / results.csv, or a sweep's output folder")
    ft.add_argument("--output", metavar="FIT.json", help="default: FIT.json beside the results")
    ft.add_argument("--plot", metavar="PLOT.svg", help="default: scaling.svg beside the results")
    ft.add_argument("--bootstrap", type=int, default=200, help="bootstrap refits for the intervals (default 200)")
    ft.add_argument("--starts", type=int, default=64,
                    help="grid starts refined by L-BFGS (the best of the 4,500 by objective; default 64)")
    ft.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ft.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    try:
        if args.scaling_command == "plan":
            return _plan(args)
        if args.scaling_command == "sweep":
            return _sweep(args)
        return _fit(args)
    except UserError as e:
        if getattr(args, "debug", False):
            raise
        print(f"smelter scaling: error: {e}", file=sys.stderr)
        return e.exit_code


# ---------------------------------------------------------------------------------------------------------


def plan_numbers(flops: float, law_spec: str, inference_tokens: float, corpus: str) -> dict:
    from scaling import laws

    law = laws.load_law(law_spec)
    n, d = law.optimum(flops)
    kn, kd = laws.kaplan_allocation(flops)
    out = {"flops": flops, "pf_days": flops / laws.PF_DAY, "law": {"name": law.name, **law.params()},
           "optimal": {"params": n, "tokens": d, "tokens_per_param": d / n, "loss": law.loss(n, d)},
           "kaplan": {"params": kn, "tokens": kd, "tokens_per_param": kd / kn, "loss": law.loss(kn, kd)}}
    if inference_tokens > 0:
        ia = laws.inference_aware(law, flops, inference_tokens)
        out["inference"] = {"inference_tokens": inference_tokens, "params": ia.params, "tokens": ia.tokens,
                            "tokens_per_param": ia.tokens / ia.params, "loss": law.loss(ia.params, ia.tokens),
                            "train_flops": ia.train_flops, "inference_flops": ia.inference_flops,
                            "total_flops": ia.total_flops, "optimal_total_flops": ia.chinchilla_total_flops,
                            "saving": ia.saving}
    held = laws.corpus_tokens(corpus) if os.path.isdir(corpus) else []
    out["corpus"] = {"folder": corpus, "manifests": held}
    if held:
        out["corpus"]["line"] = laws.corpus_line(held[0]["tokens"], d)
    return out


def _plan(args: argparse.Namespace) -> int:
    from scaling import laws

    try:
        flops = laws.parse_flops(args.flops)
    except ValueError as e:
        raise UserError(f"--flops: {e}") from None
    try:
        t = laws.parse_flops(args.inference_tokens) if str(args.inference_tokens).strip() not in ("0", "0.0") else 0.0
    except ValueError:
        raise UserError(f"--inference-tokens: cannot read {args.inference_tokens!r} as a number of tokens") from None
    r = plan_numbers(flops, args.law, t, args.corpus)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    h = laws.human
    lw = r["law"]
    print(f"compute C = {flops:.3g} FLOPs ({r['pf_days']:.3g} PF-days), law {lw['name']}: L = {lw['E']:.4g} + "
          f"{lw['A']:.4g}/N^{lw['alpha']:.4g} + {lw['B']:.4g}/D^{lw['beta']:.4g}")
    o, k = r["optimal"], r["kaplan"]
    print(f"  compute-optimal:     N {h(o['params']):>7} parameters, D {h(o['tokens']):>7} tokens "
          f"({o['tokens_per_param']:.1f} tokens/parameter), predicted loss {o['loss']:.4f}")
    print(f"  Kaplan et al. 2020:  N {h(k['params']):>7} parameters, D {h(k['tokens']):>7} tokens "
          f"({k['tokens_per_param']:.2f} tokens/parameter), loss under this law {k['loss']:.4f}")
    if "inference" in r:
        i = r["inference"]
        print(f"  serving {h(i['inference_tokens'])} tokens: N {h(i['params']):>7} parameters, D {h(i['tokens']):>7} "
              f"tokens ({i['tokens_per_param']:.1f} tokens/parameter), same loss {i['loss']:.4f}; training "
              f"{i['train_flops']:.3g} + inference {i['inference_flops']:.3g} = {i['total_flops']:.3g} FLOPs, "
              f"{100 * i['saving']:.1f}% less than the compute-optimal model's {i['optimal_total_flops']:.3g}")
    corpus = r["corpus"]
    if corpus["manifests"]:
        top = corpus["manifests"][0]
        print(f"  corpus: {corpus['line']} ({top['path']}; "
              + ", ".join(f"{s} {h(v)}" for s, v in top["sources"].items()) + ")")
    else:
        print(f"  corpus: no tokens.json under {corpus['folder']} (run `smelter tokenize`, or pass --corpus DIR)")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from scaling import sweep as sw

    s = sw.load(args.config, args.overrides)
    print(sw.describe(s), flush=True)
    if args.dry_run:
        return 0
    rows = sw.run_sweep(s, say=lambda text: print(text, flush=True))
    print(sw.markdown_table(rows))
    print(f"results: {os.path.join(s.output, sw.RESULTS)} and {os.path.join(s.output, sw.RESULTS_CSV)}; "
          f"next: smelter scaling fit {s.output}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from scaling import fit as fitmod
    from scaling.laws import Law
    from scaling.plot import plot_svg

    if args.bootstrap < 0 or args.starts < 1:
        raise UserError("--bootstrap must be 0 or more and --starts 1 or more")
    runs = fitmod.read_results(args.results)
    result = fitmod.fit_runs(runs, bootstrap=args.bootstrap, top=args.starts, seed=args.seed)
    folder = args.results if os.path.isdir(args.results) else os.path.dirname(os.path.abspath(args.results))
    out = args.output or os.path.join(folder, "FIT.json")
    svg = args.plot or os.path.join(folder, "scaling.svg")
    result["plot"] = os.path.abspath(svg)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    lw = result["law"]
    law = Law(**{k: lw[k] for k in ("E", "A", "B", "alpha", "beta")}, name="fit")
    plot_svg(runs, law, svg, title=f"scaling fit: {result['runs']} runs ({os.path.basename(os.path.abspath(folder))})")
    print(format_fit(result))
    print(f"wrote {out} and {svg}")
    return 0


def format_fit(result: dict) -> str:
    """The fit as a few lines of text."""
    lw, ci = result["law"], result.get("ci95", {})
    lines = [f"Approach 3 (Huber delta {result['method']['delta']:g} on log L, L-BFGS-B from "
             f"{result['method']['refined_starts']} of {result['method']['grid_starts']:,} grid starts), "
             f"{result['runs']} runs, rms error {100 * result['rms_relative_error']:.2f}%:"]
    for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
        interval = f"  [{ci[k][0]:.4g}, {ci[k][1]:.4g}]" if k in ci else ""
        lines.append(f"  {k:<5} {lw[k]:.4g}{interval}")
    if ci:
        lines.append(f"  (95% bootstrap intervals, {result['bootstrap']} refits; a, b: N_opt ~ C^a, D_opt ~ C^b)")
    a2 = result["approach2"]
    if "a" in a2:
        lines.append(f"Approach 2 (IsoFLOP parabolas): N_opt ~ C^{a2['a']:.3f}, D_opt ~ C^{a2['b']:.3f}")
    else:
        lines.append(f"Approach 2 (IsoFLOP parabolas): {a2.get('note', 'no exponents')}")
    for b in a2["budgets"]:
        if "params_opt" in b:
            lines.append(f"  C {b['flops']:.3g}: N_opt {b['params_opt']:.3g}, D_opt {b['tokens_opt']:.3g}, "
                         f"L_min {b['loss_min']:.4f}" + ("" if b["inside"] else " (outside the sizes run)"))
        else:
            lines.append(f"  C {b['flops']:.3g}: {b['note']}")
    for h in result["heldout"]:
        lines.append(f"held-out {h['name']}: predicted {h['predicted']:.4f}, measured {h['measured']:.4f} "
                     f"({100 * h['relative_error']:+.2f}%)")
    return "\n".join(lines)
