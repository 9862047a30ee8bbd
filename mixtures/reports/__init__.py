"""Audit reports: ``report.html`` for a pipeline run, ``mixture.html`` for a training plan.

Both are single self-contained HTML files (inline CSS, inline SVG charts, no scripts, no network), with a
JSON and a Markdown rendering of the same figures for scripts and CI logs. Every figure a page shows
that comes from ``stats.json``, the training manifest or the report's own recounts is marked with
``data-src`` / ``data-path`` so that a test can compare the rendered page with its source.
"""

from mixtures.reports.mixture_report import build_mixture_report, write_mixture_report
from mixtures.reports.run_report import build_run_report, write_run_report

__all__ = ["build_mixture_report", "build_run_report", "write_mixture_report", "write_run_report"]
