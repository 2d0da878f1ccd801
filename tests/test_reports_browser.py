"""Staff open the year's results, choose a period and download the annual report."""

import subprocess

import pytest

from tests.browser import login
from tests.factories import PASSWORD, make_user
from tests.test_reports_results import _story

pytestmark = pytest.mark.browser


def test_staff_see_the_results_page_and_its_annual_report(
    app, page, live_server, artifacts_dir, tmp_path
):
    with app.test_request_context():
        make_user("staff", email="radgiver@example.no")
        _story()
    login(page, live_server, "radgiver@example.no", PASSWORD)
    page.click("nav.mainnav >> text=Resultater")
    page.goto(f"{live_server.url}/reports/2026")
    assert page.locator("[data-figure=members]").inner_text() == "4"
    assert page.locator("#municipalities svg rect").count() == 4
    page.screenshot(path=str(artifacts_dir / "reports-results.png"), full_page=True)

    page.fill("input[name=start]", "2026-04-01")
    page.fill("input[name=end]", "2026-12-31")
    page.click("text=Vis perioden")
    page.wait_for_url("**start=2026-04-01**")
    assert page.locator("[data-figure=members]").inner_text() == "3"

    with page.expect_download() as download:
        page.click("text=Alle tabeller (XLSX)")
    assert download.value.suggested_filename == "resultater-2026-04-01-2026-12-31.xlsx"

    response = page.request.get(f"{live_server.url}/reports/2026/results.pdf")
    assert response.ok and response.body().startswith(b"%PDF")
    pdf = tmp_path / "arsrapport.pdf"
    pdf.write_bytes(response.body())
    png = artifacts_dir / "reports-annual-report"
    if subprocess.run(["which", "pdftoppm"], capture_output=True).returncode == 0:
        subprocess.run(
            ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "2", str(pdf), str(png)], check=True
        )
