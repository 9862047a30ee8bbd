"""``smelter report PATH [--format html|json|md] [--output FILE]``: the audit report of a run or a mixture.

PATH is a pipeline run's output folder (it has ``stats.json``) or a mixture plan folder (it has
``train_manifest.json``). ``html`` (the default) writes ``report.html`` / ``mixture.html`` into the folder
(or ``--output``) and prints the path; ``json`` and ``md`` print to stdout, or write ``--output``.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipelines.errors import UserError

EPILOG = """\
PATH is either
  a pipeline run folder (out/<name>/ with stats.json, manifest.json, shards/, ledger/)  -> report.html
  a mixture plan folder (with train_manifest.json)                                     -> mixture.html

The HTML pages are single self-contained files (inline CSS and SVG, no scripts, no network).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("path", metavar="PATH", help="a pipeline run folder or a mixture plan folder")
    p.add_argument("--format", choices=("html", "json", "md"), default="html",
                   help="html (default): write the page into PATH; json / md: print the figures")
    p.add_argument("--output", metavar="FILE", help="write here instead (html: instead of PATH/report.html)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def kind_of(path: str) -> str:
    """``run`` or ``mixture``, from the files the folder holds; a UserError for anything else."""
    if not os.path.isdir(path):
        raise UserError(f"{path}: no such folder")
    if os.path.isfile(os.path.join(path, "train_manifest.json")):
        return "mixture"
    if os.path.isfile(os.path.join(path, "stats.json")):
        return "run"
    raise UserError(f"{path}: neither a pipeline run folder (stats.json) nor a mixture plan folder "
                    f"(train_manifest.json)")


def main(args: argparse.Namespace) -> int:
    from mixtures.reports import mixture_report, run_report

    kind = kind_of(args.path)
    module = mixture_report if kind == "mixture" else run_report
    if args.format == "html":
        written = (module.write_mixture_report(args.path, output=args.output) if kind == "mixture"
                   else module.write_run_report(args.path, "html", output=args.output))
        print(os.path.abspath(written))
        return 0
    data = module.build_mixture_report(args.path) if kind == "mixture" else module.build_run_report(args.path)
    text = module.render_json(data) if args.format == "json" else module.render_markdown(data)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as e:
            raise UserError(f"{args.output}: cannot write: {e.strerror}") from None
        print(os.path.abspath(args.output))
    else:
        sys.stdout.write(text)
    return 0
