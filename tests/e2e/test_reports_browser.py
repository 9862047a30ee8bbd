"""The run and mixture reports rendered in a real browser (headless Chromium through Playwright).

For each page: no console error or warning and no page error; the page is not blank (much text, a
screenshot that is not one colour); and every figure it shows equals its source. The pages mark each
figure with ``data-src`` (``stats`` = the run's stats.json, ``plan`` = train_manifest.json, ``report`` = the
report's JSON, itself checked against pyarrow recounts in tests/mixtures/test_reports.py) and ``data-path``
(a dotted path into that JSON); the test reads them from the rendered DOM, parses the text back
(thousands separators, ``%``, `` s``) and compares it with the value, to the digits shown.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from mixtures.reports import mixture_report, run_report

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install "
                                                          "chromium): the browser tests need a real browser")

VIEWPORT = {"width": 1280, "height": 900}

#: every marked figure of the page, and the numeric cells / chart values that carry none
COLLECT = """() => {
  const figs = [...document.querySelectorAll('[data-path]')].map(e => ({
    src: e.getAttribute('data-src'), path: e.getAttribute('data-path'), text: e.textContent.trim()}));
  const unmarked = [...document.querySelectorAll('td.num, svg text.val, .kpi .value')]
    .filter(e => !e.hasAttribute('data-path') && !e.querySelector('[data-path]'))
    .map(e => e.textContent.trim()).filter(t => /[0-9]/.test(t));
  return {figs, unmarked, text: document.body.innerText};
}"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def blank_png(browser) -> bytes:
    page = browser.new_page(viewport=VIEWPORT)
    page.set_content("<!DOCTYPE html><html><body></body></html>")
    shot = page.screenshot()
    page.close()
    return shot


def render(browser, path) -> dict:
    """Open the file as a user would (file://), collect console messages, page errors, figures, a screenshot."""
    page = browser.new_page(viewport=VIEWPORT)
    messages, errors, requests = [], [], []
    page.on("console", lambda m: messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    result = page.evaluate(COLLECT)
    result.update(messages=messages, errors=errors, requests=requests, png=page.screenshot())
    page.close()
    return result


def parse_figure(text: str) -> tuple[float, int, bool]:
    """(number, decimals shown, is a percentage) of a displayed figure such as ``1,234``, ``12.5%``, ``3.40 s``."""
    t = text.strip()
    pct = t.endswith("%")
    t = t.removesuffix("%").removesuffix(" s").replace(",", "")
    assert re.fullmatch(r"-?\d+(\.\d+)?", t), f"not a figure: {text!r}"
    decimals = len(t.split(".")[1]) if "." in t else 0
    return float(t), decimals, pct


def lookup(obj, dotted: str):
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def check_figures(figs: list[dict], sources: dict[str, dict]) -> int:
    """Every marked figure equals its source value to the digits shown; returns how many were checked."""
    bad = []
    for f in figs:
        assert f["src"] in sources, f
        value = lookup(sources[f["src"]], f["path"])
        if f["text"] == "\u2013":
            assert value is None, f
            continue
        shown, decimals, pct = parse_figure(f["text"])
        expected = value * 100 if pct else value
        if not abs(shown - expected) <= 0.5 * 10 ** -decimals + 1e-9:
            bad.append((f["src"], f["path"], f["text"], value))
    assert not bad, bad[:10]
    return len(figs)


def not_blank(result: dict, blank_png: bytes) -> None:
    assert len(result["text"]) > 2000
    png = result["png"]
    try:
        import io

        from PIL import Image

        colours = Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 20
    except ImportError:  # no Pillow: an empty page of the same size gives a tiny one-colour PNG
        assert png != blank_png and len(png) > 4 * len(blank_png)


def assert_clean_page(result: dict, blank_png: bytes) -> None:
    """No page error, console error or warning, nothing fetched from outside the file, not blank, and
    every number on the page marked with where it comes from."""
    assert not result["errors"], result["errors"]
    assert not [m for m in result["messages"] if m[0] in ("error", "warning")], result["messages"]
    assert all(u.startswith(("file:", "data:")) for u in result["requests"]), result["requests"]
    not_blank(result, blank_png)
    assert not result["unmarked"], result["unmarked"][:10]


def test_run_report_in_chromium(browser, blank_png, mix_run, tmp_path):
    out, stats = mix_run
    data = run_report.build_run_report(out)
    path = tmp_path / "report.html"
    run_report.write_run_report(out, "html", output=str(path))
    result = render(browser, path)
    assert_clean_page(result, blank_png)
    n = check_figures(result["figs"], {"stats": stats, "report": json.loads(json.dumps(data))})
    assert n > 150
    srcs = {f["src"] for f in result["figs"]}
    assert srcs == {"stats", "report"}
    # the headline figures are there, marked with their stats.json paths
    shown = {(f["src"], f["path"]) for f in result["figs"]}
    assert {("stats", "rows_read"), ("stats", "sources.web.steps.2.drops.wrong_language"),
            ("stats", "global_steps.1.size_histogram.3-5")} <= shown
    for name in stats["sources"]:
        assert ("stats", f"sources.{name}.rows_kept") in shown
    # the check is not vacuous: one figure changed on the page is caught
    n = stats["sources"]["web"]["steps"][2]["drops"]["wrong_language"]
    marked = f'data-path="sources.web.steps.2.drops.wrong_language">{n:,}<'
    page = path.read_text()
    assert marked in page
    (tmp_path / "tampered.html").write_text(page.replace(marked, marked.replace(f">{n:,}<", f">{n + 1:,}<"), 1))
    tampered = render(browser, tmp_path / "tampered.html")
    with pytest.raises(AssertionError, match="wrong_language"):
        check_figures(tampered["figs"], {"stats": stats, "report": json.loads(json.dumps(data))})


def test_mixture_report_in_chromium(browser, blank_png, mix_plan, tmp_path):
    plan = json.loads((mix_plan / "train_manifest.json").read_text())
    data = mixture_report.build_mixture_report(mix_plan)
    path = tmp_path / "mixture.html"
    mixture_report.write_mixture_report(mix_plan, output=str(path))
    result = render(browser, path)
    assert_clean_page(result, blank_png)
    n = check_figures(result["figs"], {"plan": plan, "report": json.loads(json.dumps(data))})
    assert n > 80
    shown = {(f["src"], f["path"]) for f in result["figs"]}
    assert ("plan", "tokens") in shown
    for i, ph in enumerate(plan["phases"]):
        for name in ph["sources"]:
            assert ("plan", f"phases.{i}.sources.{name}.tokens") in shown
            assert ("report", f"phases.{i}.sources.{name}.token_share") in shown
    for name in plan["sources"]:
        assert ("plan", f"sources.{name}.epochs") in shown
        assert ("report", f"sources.{name}.run.funnel.0.rows_in") in shown
