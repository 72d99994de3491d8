"""The HTML report in a real browser: it renders, and it asks for nothing beyond its own file.

Headless Chromium (Debian's package, installed by ``tests.browser`` when missing) opens the report
of a synthetic, demo-like campaign from disk. Every request the page makes is recorded, including
any a stylesheet, font, image or script would trigger; the only one allowed is the file itself.
The Content-Security-Policy must also hold without a single violation report in the console.
"""

from __future__ import annotations

from pathlib import Path

from carecast.reports import COMPLEMENT, SUPPRESSED, write_report
from tests.browser import is_local, open_page
from tests.report_screenshot import RUN, demo_report


def test_report_renders_offline_with_no_request_leaving_the_file(browser, tmp_path: Path) -> None:
    files = write_report(demo_report(), tmp_path)
    with open_page(browser, files.html) as (page, requested):
        console = []
        page.on("console", lambda message: console.append(message.text))
        page.reload(wait_until="networkidle")
        assert page.title() == f"{RUN.campaign}, {RUN.send_date}: campaign report"
        assert page.locator("h1").inner_text() == RUN.campaign
        headings = page.locator("h2").all_inner_texts()
        assert {"Audience funnel", "Outcomes by variant", "A/B test", "Holdout lift", "By day"} <= set(headings)
        assert page.locator("table").count() >= 6
        charts = page.locator("svg.chart")
        assert charts.count() == 3 and all(charts.nth(i).bounding_box()["width"] > 300 for i in range(3))
        body = page.locator("body").inner_text()
        assert SUPPRESSED in body and COMPLEMENT in body
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert requested, "the request log is empty: the page was not loaded"
    outside = [url for url in requested if not is_local(url, files.html)]
    assert outside == []
    assert requested == [files.html.resolve().as_uri()] * len(requested)
    assert not [text for text in console if "Content Security Policy" in text or "Refused" in text]
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_the_request_log_would_catch_a_third_party_request(browser, tmp_path: Path) -> None:
    """The check above is only as good as the log: a page that does load something is caught."""
    page_file = tmp_path / "leaky.html"
    page_file.write_text('<!doctype html><title>leaky</title><img src="https://tracker.example.com/pixel.gif">')
    with open_page(browser, page_file) as (_page, requested):
        pass
    assert [url for url in requested if not is_local(url, page_file)] == ["https://tracker.example.com/pixel.gif"]
