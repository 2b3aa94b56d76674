"""Eight dashboard sessions at once in real Chromium, on one server and its shared cache.

Each browser context is its own Streamlit session. All eight open a shared link to the Tune
page with their own formula at the same moment, then all move their own weight slider at
the same moment. Every session must show the metrics of its own formula (as one session
alone computes them with the library) and carry that formula in its own URL: nothing of
one session's state may reach another.
"""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest

import fusion
from app import charts, state
from fusion.formulas import default_alphas
from tests.dashboard_driver import CHROMIUM_ARGS, TIMEOUT_MS, serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SESSIONS = 8
KINDS = ("product", "sum", "rank")


def session_formula(i: int, logs: fusion.LogSet) -> fusion.Formula:
    weights = {o: 0.25 for o in logs.objectives} | {"click": round(0.05 + 0.1 * i, 2)}
    kind = KINDS[i % len(KINDS)]
    return fusion.Formula.of(kind, weights, alphas=default_alphas(logs, kind) or None)


def expected_rows(logs: fusion.LogSet, formula: fusion.Formula) -> dict[str, list[str]]:
    """Per objective, the metric values the Tune table shows for ``formula``, as text."""
    table = charts.format_metric_table(charts.metric_table(
        fusion.evaluate(logs, formula, metrics=list(state.METRICS)).to_frame()))
    return {o: [table.loc[o, m] for m in state.METRICS] for o in table.index}


_CELLS = """t => Array.from(t.querySelectorAll('tr')).map(
    r => Array.from(r.querySelectorAll('th, td')).map(c => c.innerText.trim()))"""


_CLICK_WEIGHT_IS = """w => Math.abs(
    parseFloat(new URLSearchParams(location.search).get('w.click')) - w) < 1e-9"""


async def shown_rows(table) -> dict[str, list[str]]:
    """Per objective, the metric values the Tune table shows (its deltas left out)."""
    header, *rows = await table.evaluate(_CELLS)
    at = [header.index(m) for m in state.METRICS]
    return {row[0]: [row[i] for i in at] for row in rows}


async def settle(page) -> None:
    """Until the session's script has finished its run (no running indicator for 0.5 s)."""
    quiet_since = None
    while True:
        running = await page.get_by_test_id("stStatusWidget").count()
        now = asyncio.get_running_loop().time()
        quiet_since = None if running else (quiet_since or now)
        if quiet_since is not None and now - quiet_since >= 0.5:
            break
        await page.wait_for_timeout(50)
    exceptions = page.get_by_test_id("stException")
    assert await exceptions.count() == 0, await exceptions.first.inner_text()


async def one_session(browser, url: str, formula: fusion.Formula, presses: int) -> tuple:
    context = await browser.new_context(viewport={"width": 1500, "height": 1100})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(f"{url}/tune?{urllib.parse.urlencode(state.formula_to_query(formula))}")
    table = page.get_by_test_id("stTable").first
    await table.wait_for()
    await settle(page)
    linked = await shown_rows(table)
    thumb = page.get_by_test_id("stSlider").first.get_by_role("slider")
    await thumb.focus()
    for _ in range(presses):
        await thumb.press("ArrowRight")
    # The run for the last move has written its formula into the URL.
    await page.wait_for_function(_CLICK_WEIGHT_IS, arg=formula.weights["click"] + 0.01 * presses)
    await settle(page)
    moved = await shown_rows(table)
    return linked, moved, page.url


async def all_sessions(chromium: str, url: str, formulas: list[fusion.Formula]) -> list[tuple]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(*(one_session(browser, url, f, 1 + i % 3)
                                          for i, f in enumerate(formulas)))
        finally:
            await browser.close()


def test_eight_browser_sessions_at_once_each_see_only_their_own_formula(chromium, tmp_path):
    logs = fusion.load_logs(state.SAMPLE_LOGS)
    formulas = [session_formula(i, logs) for i in range(SESSIONS)]
    with serve(tmp_path / "server.log") as (url, _server):
        results = asyncio.run(all_sessions(chromium, url, formulas))

    for i, (formula, (linked, moved, final_url)) in enumerate(zip(formulas, results)):
        assert linked == expected_rows(logs, formula), f"session {i}, shared link"
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(final_url).query))
        tuned = state.formula_from_query(query)
        assert tuned.kind == formula.kind
        assert tuned.weights["click"] == pytest.approx(formula.weights["click"] + 0.01 * (1 + i % 3))
        assert moved == expected_rows(logs, tuned), f"session {i}, after its moves"
    # Eight different formulas: eight different tables (a leak would make two agree).
    assert len({str(linked) for linked, _, _ in results}) == SESSIONS
