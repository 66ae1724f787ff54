"""The researcher's pages in a real browser: datasets, the editor's check and run, releases with their
chart, suppressed cells, and the history."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from enclave.disclosure.release import Cell, Release, ReleaseColumn
from enclave.web.display import Mark, charts, marked_lines
from tests.api.conftest import Service
from tests.web.browser import assert_accessible, screenshot
from tests.web.conftest import sign_in

BAD = "SELECT school,\n  COUNT(*) AS n,\n  AVG(first_name) AS x\nFROM enrollments\nGROUP BY school"
GOOD = "SELECT school, COUNT(*) AS n, AVG(days_absent) AS absent\nFROM enrollments\nGROUP BY school"
# Alder Elementary has no child above grade 5: those seven grades (public keys) are suppressed, whatever the noise
# lets through now and then; ε 2 over two quantities keeps the chance of a false release small
SMALL = "SELECT grade, COUNT(*) AS n FROM enrollments WHERE school = 'Alder Elementary' GROUP BY grade"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _editor(page: Page, sql: str, epsilon: str = "") -> None:
    page.goto("/researcher/query")
    page.get_by_label("SQL", exact=True).fill(sql)
    page.get_by_label("ε to spend").fill(epsilon)


def _press(page: Page, button: str) -> None:
    """Press a button with the keyboard: focus it, then Enter."""
    page.get_by_role("button", name=button, exact=True).focus()
    page.keyboard.press("Enter")
    page.wait_for_load_state()


def test_home_shows_granted_datasets_and_budget(page: Page, service: Service) -> None:
    sign_in(page, service, "alice")
    expect(page.get_by_role("link", name="Riverton Children's Collaborative (demo)")).to_be_visible()
    budget = page.locator("table tbody tr")
    expect(budget).to_have_count(1)
    expect(budget.locator("td").nth(1)).to_have_text("5")  # ε left of the grant's cap 5
    for link in ("SQL editor: check and run a query", "Your queries", "Approved templates"):
        expect(page.get_by_role("link", name=link)).to_be_visible()
    assert_accessible(page)
    screenshot(page, "researcher-home")

    page.get_by_role("link", name="Riverton Children's Collaborative (demo)").click()
    expect(page.get_by_role("heading", level=2)).to_have_count(5)  # one per table
    absent = page.locator("code", has_text=re.compile("^days_absent$"))
    row = page.locator("#table-enrollments + p + table tr", has=absent)
    expect(row.locator("td")).to_have_text(["INTEGER", "measure", "", "none", "0 to 180"])
    expect(page.get_by_text("is below 11 is suppressed")).to_be_visible()
    assert_accessible(page)


def test_a_bad_query_is_marked_at_its_token(page: Page, service: Service) -> None:
    sign_in(page, service, "alice")
    _editor(page, BAD)
    _press(page, "Check")
    expect(page.get_by_role("heading", name="Refused: 2 violations")).to_be_visible()
    marks = page.locator("pre.sql mark")
    expect(marks).to_have_count(1)  # two violations at one token: one mark
    expect(marks).to_have_text("first_name")
    assert marks.evaluate("m => m.closest('.line').dataset.line") == "3"
    line = page.locator("pre.sql .line[data-line='3']")
    expect(line).to_have_text(re.compile(r"^3\s+AVG\(first_name\) AS x$"))
    items = page.locator("ol.violations li")
    expect(items.first).to_contain_text("unknown_column")
    expect(items.first).to_contain_text("line 3, column 7")
    expect(items.first).to_contain_text("Remedy: allowed columns:")
    expect(page.get_by_label("SQL", exact=True)).to_have_value(BAD)  # the editor keeps the SQL as typed
    assert_accessible(page)
    screenshot(page, "researcher-check")


def test_a_refusal_without_a_position_says_so(page: Page, service: Service) -> None:
    sign_in(page, service, "alice")
    _editor(page, "SELECT school, COUNT(*) AS n FROM enrollments WHERE school + 1 > 2 GROUP BY school")
    _press(page, "Check")
    expect(page.locator("ol.violations li")).to_contain_text("type_mismatch")
    expect(page.locator("ol.violations li .where")).to_have_text("no position in the SQL")


def test_a_good_check_previews_cost_deadline_and_intervals(page: Page, service: Service) -> None:
    sign_in(page, service, "alice")
    _editor(page, GOOD, "1")
    _press(page, "Check")
    expect(page.get_by_role("heading", name="Accepted")).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text("ε 1, δ 0")
    expect(page.locator("dl.facts")).to_contain_text(re.compile(r"the answer comes [\d.]+ s after it starts"))
    rows = page.locator("table.preview tbody tr")
    expect(rows).to_have_count(3)  # n (also the count the mean divides by), absent's sum, persons per group
    expect(rows.first.locator("td").last).to_have_text(re.compile(r"^± \d+\.\d\d$"))
    outputs = page.locator("table.outputs tbody tr")  # the interval each output will have, before spending
    expect(outputs).to_have_count(2)
    expect(outputs.first.locator("th")).to_have_text("n")
    expect(outputs.first.locator("td").last).to_have_text("± 79.58")
    expect(outputs.last.locator("td").last).to_have_text(
        "± about (7,118 + 79.6 · |mean - 90|) / n (n the group's count)")
    expect(page.get_by_label("SQL", exact=True)).to_have_value(GOOD)
    assert_accessible(page)


def _released_cells(page: Page, column: int) -> list[tuple[float, float, float]]:
    out = []
    for cell in page.locator(f"table.release tbody tr td:nth-child({column + 1})[data-state='released']").all():
        value = float(cell.locator(".value").inner_text())
        low, high = (float(n) for n in NUMBER.findall(cell.locator(".interval").inner_text()))
        out.append((value, low, high))
    return out


def test_a_good_query_runs_into_a_protected_table_and_chart(page: Page, service: Service) -> None:
    sign_in(page, service, "alice")
    _editor(page, GOOD, "1")
    _press(page, "Run")
    expect(page.get_by_role("heading", name="Release", exact=True)).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Released.")
    expect(page.locator("table.release tbody tr")).to_have_count(21)  # one per school (public keys) and the NULL key
    expect(page.locator(".spent")).to_have_text("ε 1, δ 0")
    expect(page.locator(".left")).to_have_text(re.compile(r"^ε 4, δ 1e-05$"))
    expect(page.locator(".replayed")).to_have_text("no")
    counts = _released_cells(page, 1)
    assert counts
    assert all(low <= value <= high for value, low, high in counts)
    assert all(low <= value <= high for value, low, high in _released_cells(page, 2))
    charts = page.locator("svg.chart")
    expect(charts).to_have_count(2)
    chart = page.locator("svg.chart[data-column='n']")
    assert chart.get_attribute("role") == "img"
    bars = chart.locator("rect.bar")
    suppressed = page.locator("table.release tbody tr td:nth-child(2)[data-state='suppressed']").count()
    expect(bars).to_have_count(len(counts))
    expect(chart.locator("text.suppressed-label")).to_have_count(suppressed)
    expect(chart.locator("line.interval")).to_have_count(3 * len(counts))  # a line and two ends per bar
    query_id = page.locator(".query-id").inner_text()
    assert_accessible(page)
    screenshot(page, "researcher-release")

    page.goto("/researcher/queries")
    link = page.get_by_role("link", name=query_id)
    expect(link).to_be_visible()
    link.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".query-id")).to_have_text(query_id)
    expect(page.locator("table.release tbody tr")).to_have_count(21)
    expect(page.locator(".left")).to_have_text("ε 4, δ 1e-05")  # from the budget: a past release keeps no balance
    assert_accessible(page)


def test_suppressed_cells_are_shown_as_suppressed_in_table_and_chart(page: Page, service: Service) -> None:
    sign_in(page, service, "alice")
    _editor(page, SMALL, "2")
    _press(page, "Run")
    rows = page.locator("table.release tbody tr")
    expect(rows).to_have_count(14)  # grades 0 to 12 and NULL: every public key, none dropped
    suppressed = page.locator("table.release td[data-state='suppressed']")
    count = suppressed.count()
    assert count >= 1
    for cell in suppressed.all():
        expect(cell.locator(".value")).to_have_text("suppressed")
        expect(cell.locator(".reason")).to_have_text("fewer than 11 persons (noisy count)")
    chart = page.locator("svg.chart[data-column='n']")
    expect(chart.locator("text.suppressed-label")).to_have_count(count)
    expect(chart.locator("text.suppressed-label").first).to_have_text("suppressed")
    expect(chart.locator("rect.bar")).to_have_count(14 - count)
    assert_accessible(page)
    screenshot(page, "researcher-suppressed")


def test_a_refused_run_keeps_the_sql_and_spends_nothing(page: Page, service: Service) -> None:
    sign_in(page, service, "bob")
    _editor(page, BAD, "1")
    _press(page, "Run")
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.locator("pre.sql mark")).to_have_text("first_name")
    expect(page.get_by_label("SQL", exact=True)).to_have_value(BAD)
    page.goto("/researcher")
    expect(page.locator("table tbody tr td").nth(1)).to_have_text("5")


def test_marks_merge_on_one_token_and_stay_on_their_line() -> None:
    lines = marked_lines("SELECT a,\n  AVG(b)", [Mark(2, 7, 1, "x"), Mark(2, 7, 1, "y"), Mark(9, 1, 3, "z")])
    assert [[(s.text, s.marked) for s in line] for line in lines] == [
        [("SELECT a,", False)], [("  AVG(", False), ("b", True), (")", False)]]


def test_a_chart_draws_no_bar_for_a_suppressed_group() -> None:
    cells = [[Cell(value="a"), Cell(value=40, interval=(30.0, 50.0), mechanism="discrete_laplace", scale=4.0)],
             [Cell(value="b"), Cell(value=None, suppressed=True, reason="fewer than 11 persons (noisy count)")]]
    release = Release(query_id="q", dataset="demo", data_version="v1", rules_sha256="0", epsilon=1, delta=0,
                      alpha=0.05, suppression_threshold=11, rows=cells,
                      columns=[ReleaseColumn(name="k", kind="key"), ReleaseColumn(name="n", kind="count")])
    (chart,) = charts(release)
    drawn, hidden = chart.bars
    assert (drawn.label, hidden.label) == ("a", "b")
    assert drawn.x == chart.plot_left  # from 0, the left end of the axis
    assert drawn.low_x < drawn.x + drawn.width < drawn.high_x == chart.plot_right
    assert (hidden.width, hidden.low_x, hidden.high_x) == (0, 0, 0)
