"""The results page (``index.html``): its data, the CLI and hooks, and the page in a real browser.

The browser tests open the page in headless Chromium (Debian's ``chromium`` package, driven by
Playwright's pip package pointed at it; ``playwright install`` is never needed) and skip, with
the reason, only when one of the two is missing. ``.ci/run`` installs both, so CI runs them.

Two folders are rendered: the committed ``results/default`` as it is, and a small synthetic
folder carrying the columns that newer runs add (FVU, the constant and sampling+prior
references, the efficiency against sampling+prior, sealed and open/closed-book labels, failure
codes), so each shows up when present and the page still works when absent.

``ALGZU_REFRESH_SCREENSHOT=1 python -m pytest tests/test_html_report.py -k screenshot`` also
rewrites the README's screenshot, ``results/default/index.png``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from algzu.errors import AlgzuError
from algzu.reports.html import OPTIONAL_COLUMNS, load_report_data, render_html, write_html_report

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "results" / "default"
M43 = ROOT / "results" / "challenge-m43"
CHROMIUM = Path("/usr/bin/chromium")
# Flags from this machine's probe notes: no sandbox (root), no GPU, nothing phoned home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _synthetic(tmp: Path) -> Path:
    """A results folder with the newer columns: two models of ``results/default``, plus
    ``fvu``, ``constant_mse``, ``prior_mse``, ``efficiency_prior(_lo/_hi)``, ``sealed``,
    ``book``, two failed cells with codes, and a held-out, closed-book provenance. The
    figures have the shapes of the real ones (prior MSE = 1 / (1/V + n/v), with n/v =
    1 / sampling MSE); they are fixtures, not results."""
    out = tmp / "synthetic"
    out.mkdir()
    keep = ["2nd_argmax-d4-n3", "algzoo/example_2nd_argmax"]
    summary = pd.read_csv(DEFAULT / "summary.csv")
    summary = summary[summary["model"].isin(keep)].reset_index(drop=True)
    # The page reads either name of each newer column; this folder uses the other one.
    summary = summary.drop(columns=["fvu", "fvu_lo", "fvu_hi", "constant_mse", "sampling_prior_mse", "prior_efficiency",
                                    "prior_efficiency_lo", "prior_efficiency_hi", "sealed"])
    cells = pd.read_csv(DEFAULT / "cells.csv", dtype={"error": str, "message": str}, keep_default_na=False)
    cells = cells[cells["model"].isin(keep)].reset_index(drop=True)
    truth_var = cells.drop_duplicates(["model", "copy"]).groupby("model")["ground_truth"].var()
    v = summary["model"].map(truth_var)
    prior = 1.0 / (1.0 / v + 1.0 / summary["sampling_mse"].fillna(np.inf))
    with np.errstate(divide="ignore"):
        summary["fvu"] = summary["mse"] / v
        summary["constant_mse"] = v
        summary["prior_mse"] = prior
        summary["efficiency_prior"] = np.where(summary["mse"] > 0, prior / summary["mse"], np.inf)
        summary["efficiency_prior_lo"] = np.where(summary["mse_hi"] > 0, prior / summary["mse_hi"], np.inf)
        summary["efficiency_prior_hi"] = np.where(summary["mse_lo"] > 0, prior / summary["mse_lo"], np.inf)
    summary["sealed"] = summary["estimator"] != "exact_cones"
    summary["book"] = "closed"
    failed = (cells["model"] == "2nd_argmax-d4-n3") & (cells["estimator"] == "stratified") & \
        (cells["budget_flops"] == 10_000) & (cells["copy"] < 2)
    cells.loc[failed, "error"] = ["over_budget", "timeout"]
    cells.loc[failed, "message"] = ["spent 10241 FLOPs of 10000", "no answer within 600 s"]
    row = (summary["model"] == "2nd_argmax-d4-n3") & (summary["estimator"] == "stratified") & \
        (summary["budget_flops"] == 10_000)
    summary.loc[row, "failures"] = 2
    summary.to_csv(out / "summary.csv", index=False, float_format="%.10g")
    cells.to_csv(out / "cells.csv", index=False, float_format="%.10g")
    provenance = json.loads((DEFAULT / "provenance.json").read_text())
    provenance["config"]["cases"] = [c for c in provenance["config"]["cases"] if c["model"] in keep]
    provenance["config"]["seed"] = "secret"
    provenance["seeds"] = {"suite": "secret", "held_out": True}
    provenance["book"] = "closed"
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2))
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return _synthetic(tmp_path_factory.mktemp("html-report"))


def _expected_series(results: Path) -> dict[str, int]:
    """Model -> estimators + reference curves with at least one finite point, from the files."""
    summary = pd.read_csv(results / "summary.csv")
    references = ["sampling_mse"] + [n for role in ("prior_mse", "constant_mse") for n in OPTIONAL_COLUMNS[role]
                                     if n in summary]
    return {model: g["estimator"].nunique() + sum(int(np.isfinite(g[c]).any()) for c in references)
            for model, g in summary.groupby("model")}


# --- the data model, no browser --------------------------------------------------------------


def test_committed_results_give_every_model_estimator_and_budget_with_inf_and_undefined_apart():
    data = load_report_data(DEFAULT)
    summary = pd.read_csv(DEFAULT / "summary.csv")
    cases = json.loads((DEFAULT / "provenance.json").read_text())["config"]["cases"]
    assert [m["id"] for m in data["models"]] == [c["model"] for c in cases], "the suite's order"
    for m in data["models"]:
        g = summary[summary["model"] == m["id"]]
        assert sorted(e["name"] for e in m["estimators"]) == sorted(g["estimator"].unique())
        assert sum(len(e["points"]) for e in m["estimators"]) == len(g)
        assert [r["key"] for r in m["references"]] == ["sampling", "prior", "constant"]
    points = {(m["id"], e["name"], p["budget"]): p
              for m in data["models"] for e in m["estimators"] for p in e["points"]}
    # exact_cones on M2,2 is exact (efficiency inf against both references); at 1e3 on M16,10
    # every estimator is below one sample (plain sampling's efficiency undefined, the headline defined).
    assert points[("algzoo/2nd_argmax-d2-n2", "exact_cones", 1e5)]["eff"] == "inf"
    assert points[("algzoo/2nd_argmax-d2-n2", "exact_cones", 1e5)]["effp"] == "inf"
    assert points[("algzoo/example_2nd_argmax", "top3_cones", 1e3)]["eff"] is None
    assert points[("algzoo/example_2nd_argmax", "top3_cones", 1e3)]["effp"] == pytest.approx(0.0008936724131)
    assert points[("2nd_argmax-d4-n3", "stratified", 1e6)]["mse"] == pytest.approx(2.4169643e-06, rel=1e-5)
    assert data["headline"]["key"] == "effp" and "fvu" in data["columns"] and data["book"] == "open"
    assert not data["held_out"] and data["provenance"]["seeds"]["suite"] == 0
    written = json.loads((DEFAULT / "provenance.json").read_text())["verdicts"]
    assert {v["model"]: v["text"] for v in data["verdicts"]} == written
    assert [v["source"] for v in data["verdicts"]] == ["provenance.json"] * 5  # computed once, when written


def test_new_columns_show_up_when_present(synthetic):
    data = load_report_data(synthetic)
    assert {"fvu", "constant_mse", "prior_mse", "efficiency_prior", "efficiency_prior_lo", "efficiency_prior_hi",
            "sealed", "book"} <= set(data["columns"])
    assert data["headline"]["key"] == "effp" and data["book"] == "closed" and data["held_out"]
    assert data["provenance"]["seeds"] == {"held_out": True}
    d4 = next(m for m in data["models"] if m["id"] == "2nd_argmax-d4-n3")
    assert [r["key"] for r in d4["references"]] == ["sampling", "prior", "constant"] and d4["book"] == "closed"
    sealed = {e["name"]: e["sealed"] for e in d4["estimators"]}
    assert sealed == {"exact_cones": False, "sampling": True, "stratified": True}
    failed = next(p for e in d4["estimators"] if e["name"] == "stratified" for p in e["points"] if p["budget"] == 1e4)
    assert failed["failures"] == 2 and set(failed["errors"]) == {"over_budget", "timeout"}
    assert failed["errors"]["timeout"]["message"] == "no answer within 600 s"
    assert all(p["fvu"] is not None for e in d4["estimators"] for p in e["points"])


def test_challenge_verdict_is_read_as_written_not_recomputed():
    data = load_report_data(M43)
    written = json.loads((M43 / "challenge.json").read_text())["verdict"]
    assert [v["text"] for v in data["verdicts"]] == [written] and data["verdicts"][0]["source"] == "challenge.json"
    assert data["kind"] == "challenge" and data["tables"][0]["rows"][1][0] == 71_000


def test_page_is_self_contained_deterministic_and_escapes_names(tmp_path):
    folder = tmp_path / "r"
    shutil.copytree(DEFAULT, folder, ignore=shutil.ignore_patterns("*.png", "index.html"))
    summary = pd.read_csv(folder / "summary.csv")
    summary.loc[summary["estimator"] == "stratified", "estimator"] = "</script><script>alert(1)</script>"
    summary.to_csv(folder / "summary.csv", index=False)
    html = render_html(load_report_data(folder))
    assert html == render_html(load_report_data(folder)), "same files, same bytes"
    assert html.lower().count("</script") == 2, "only the page's own two script elements close"
    lowered = html.lower()
    for remote in ("src=\"http", "href=\"http", "url(http", "@import", "fetch(", "xmlhttprequest", "<link"):
        assert remote not in lowered, remote


def test_report_command_rebuilds_index_and_a_bad_folder_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from algzu.cli import main

    folder = tmp_path / "r"
    shutil.copytree(M43, folder, ignore=shutil.ignore_patterns("*.png", "index.html"))
    monkeypatch.setattr(sys, "argv", ["algzu", "report", str(folder)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == str(folder / "index.html")
    assert (folder / "index.html").read_text() == render_html(load_report_data(folder))
    (tmp_path / "empty").mkdir()
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "summary.csv").write_text("model,estimator\nx,y\n")
    (tmp_path / "torn" / "provenance.json").write_text("{}")
    for case, word in [("absent", "no such folder"), ("empty", "no summary.csv"), ("torn", "lacks the columns")]:
        monkeypatch.setattr(sys, "argv", ["algzu", "report", str(tmp_path / case)])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and word in err[0], err
    assert not (tmp_path / "empty" / "index.html").exists()
    with pytest.raises(AlgzuError, match="not valid JSON"):
        (tmp_path / "torn" / "provenance.json").write_text("{")
        shutil.copy(DEFAULT / "summary.csv", tmp_path / "torn" / "summary.csv")
        load_report_data(tmp_path / "torn")


def test_leaderboard_and_challenge_write_index_html(tmp_path, monkeypatch):
    """The hooks in ``write_results`` and ``run_challenge``, fed the committed M4,3 run (no JAX work)."""
    import algzu.challenge as challenge
    from algzu.reports.suite import write_results
    from algzu.run import SuiteResult
    from algzu.suites import get_suite

    cells = pd.read_csv(M43 / "cells.csv", dtype={"error": str, "message": str}, keep_default_na=False)
    summary = pd.read_csv(M43 / "summary.csv")
    fps = json.loads((M43 / "provenance.json").read_text())["flops_per_sample"]
    result = SuiteResult(cells.assign(seconds=0.0), summary.assign(seconds=0.0), fps)
    written = write_results(tmp_path / "leaderboard", get_suite("m43"), result)
    assert tmp_path / "leaderboard" / "index.html" in written
    page = load_report_data(tmp_path / "leaderboard")
    assert page["kind"] == "leaderboard" and page["verdicts"][0]["source"] == "provenance.json"
    monkeypatch.setattr(challenge, "run_suite", lambda suite, **kwargs: result)
    summary_json = challenge.run_challenge("m43", tmp_path / "m43", cache_dir=tmp_path / "cache").summary
    assert (tmp_path / "m43" / "index.html").read_text() == render_html(load_report_data(tmp_path / "m43"))
    page = load_report_data(tmp_path / "m43")
    assert page["kind"] == "challenge" and page["models"][0]["copy_statistics"]["copies"] == 256
    assert [v["text"] for v in page["verdicts"]] == [summary_json["verdict"]]
    assert page["verdicts"][0]["source"] == "challenge.json"


# --- in a real browser ---------------------------------------------------------------------------


def _browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright's pip package is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run does this)"
    return None


browser_needed = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


class Page:
    """One page open in headless Chromium, with every console message and request it made."""

    def __init__(self, browser, html: Path, width: int = 1200):
        self.console: list[tuple[str, str]] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.console.append(("pageerror", str(e))))
        self.page.on("request", lambda r: self.requests.append(r.url))
        start = time.perf_counter()
        self.page.goto(html.as_uri())
        self.page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        self.load_seconds = time.perf_counter() - start


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Playwright gives every launch a fresh, temporary user-data-dir.
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def pages(browser, synthetic, tmp_path_factory):
    """The committed default results and the synthetic folder, each rendered and opened."""
    out = {}
    for name, source in (("default", DEFAULT), ("synthetic", synthetic)):
        folder = tmp_path_factory.mktemp(f"page-{name}")
        for f in ("summary.csv", "cells.csv", "provenance.json"):
            shutil.copy(source / f, folder / f)
        out[name] = (folder, Page(browser, write_html_report(folder)))
    return out


@browser_needed
@pytest.mark.parametrize("name", ["default", "synthetic"])
def test_page_loads_with_no_console_errors_and_fetches_nothing(pages, name):
    folder, page = pages[name]
    assert [m for m in page.console if m[0] in ("error", "pageerror", "warning")] == []
    assert page.requests == [(folder / "index.html").as_uri()], "nothing but the page itself is loaded"


@browser_needed
@pytest.mark.parametrize("name", ["default", "synthetic"])
def test_every_model_has_a_chart_with_one_series_per_estimator_and_reference(pages, name):
    folder, page = pages[name]
    expected = _expected_series(folder)
    charts = page.page.eval_on_selector_all(
        "div.chart", "els => els.map(e => [e.dataset.model, e.querySelectorAll('svg g.series').length,"
                     " e.parentElement.querySelectorAll('ul.legend button').length])")
    assert {m: n for m, n, _ in charts} == expected
    assert all(n == legend for _, n, legend in charts), "one legend entry per series"
    if name == "synthetic":
        labels = page.page.eval_on_selector_all("ul.legend button", "els => els.map(e => e.textContent)")
        assert {"best constant", "sampling+prior (analytic)", "exact_cones (mechanistic) (unsealed)"} <= set(labels)
        text = page.page.inner_text("body")
        assert "closed-book" in text and "held-out seeds" in text and "held out (drawn from a secret" in text
        assert "efficiency vs sampling+prior" in text and "FVU" in text
        assert "2 of 32 failed: over_budget \u00d71, timeout \u00d71" in text


@browser_needed
def test_clicking_a_legend_entry_hides_its_series_and_clicking_again_shows_it(pages):
    _, page = pages["default"]
    chart = page.page.locator("section.model").nth(2)  # 2nd_argmax-d4-n3: three estimators and three references
    series = chart.locator("svg g.series[data-series='est:exact_cones']")
    button = chart.locator("ul.legend button[data-series='est:exact_cones']")
    assert series.is_visible() and button.get_attribute("aria-pressed") == "true"
    button.click()
    series = chart.locator("svg g.series[data-series='est:exact_cones']")  # the chart is redrawn
    assert not series.is_visible() and button.get_attribute("aria-pressed") == "false"
    assert chart.locator("svg g.series[data-series='est:sampling']").is_visible(), "only that series hides"
    button.click()
    assert chart.locator("svg g.series[data-series='est:exact_cones']").is_visible()


@browser_needed
def test_sorting_a_budget_column_reorders_rows_by_efficiency(pages):
    _, page = pages["default"]
    table = page.page.locator("table.board[data-model='2nd_argmax-d4-n3']")

    def order():
        return table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.estimator)")

    assert order() == ["exact_cones", "sampling", "stratified"]
    header = table.locator("thead th").nth(1 + 1 + 3)  # estimator, best, 1e3, 1e4, 1e5, 1e6
    assert header.inner_text().startswith("1e6")
    header.click()
    # The headline at 1e6 (summary.csv): exact_cones inf, stratified 4.42, sampling 0.93.
    assert order() == ["exact_cones", "stratified", "sampling"]
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    assert order() == ["sampling", "stratified", "exact_cones"]
    table.locator("thead th").first.click()
    assert order() == ["exact_cones", "sampling", "stratified"]


@browser_needed
def test_hovering_a_point_shows_its_figures(pages):
    _, page = pages["default"]
    chart = page.page.locator("div.chart[data-model='2nd_argmax-d4-n3']")
    marker = chart.locator("g.series[data-series='est:stratified'] rect").nth(3)  # 1e6 FLOPs (a square: not mechanistic)
    box = marker.bounding_box()
    page.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tip = chart.locator(".tip")
    assert tip.is_visible()
    text = tip.inner_text()
    assert "stratified" in text and "budget 1e6 FLOPs" in text and "MSE 2.42e\u22126 [1.41e\u22126, 3.88e\u22126]" in text, text
    assert "efficiency vs sampling+prior 4.14 [2.56, 7.27]" in text, text
    assert "efficiency vs sampling 4.17 [2.58, 7.34]" in text, text


@browser_needed
def test_page_fits_a_phone_width_and_saves_a_screenshot(browser, pages, tmp_path):
    folder, _ = pages["default"]
    narrow = Page(browser, folder / "index.html", width=390)
    assert [m for m in narrow.console if m[0] in ("error", "pageerror")] == []
    widths = narrow.page.eval_on_selector_all("div.chart svg", "els => els.map(e => e.getBoundingClientRect().width)")
    assert widths and max(widths) <= 390, widths
    shot = tmp_path / "index.png"
    _, wide = pages["default"]
    wide.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    if os.environ.get("ALGZU_REFRESH_SCREENSHOT"):
        _readme_screenshot(wide.page, DEFAULT / "index.png")


def _readme_screenshot(page, path: Path) -> None:
    """The README's picture: the top of the page (verdicts and the first model) at 1200 px,
    reduced to a 256-colour palette so it stays small in the repository."""
    from PIL import Image

    page.set_viewport_size({"width": 1200, "height": 1340})
    page.evaluate("window.scrollTo(0, 0)")
    raw = path.with_suffix(".raw.png")
    page.screenshot(path=str(raw))
    Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()
