"""A staff member composes a newsletter in Chromium, watches the live preview, sends it
and follows the progress bar to 100 % while a real worker sends it; then the statistics.

Screenshots of the editor, the preview, the progress and the statistics are saved to
test-artifacts/ for a person to look at.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from crm.extensions import db
from crm.mail.services import record_event
from crm.members.models import Contact, Network
from crm.newsletters import services
from crm.newsletters.models import Newsletter, NewsletterRecipient
from crm.subscriptions import links
from tests.browser import login
from tests.factories import (
    PASSWORD,
    bulk_subscribers,
    make_company,
    make_newsletter,
    make_subscriber,
    make_user,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
RECIPIENTS = 40
BODY = """## Høstseminar om grønn logistikk

Vi inviterer deg, %first_name%, til **høstseminar** torsdag 16. oktober kl. 09.00 på \
Kongsvinger kunnskapspark.

- Elektrifisering av tungtransport i Glåmdalen
- Felles returlogistikk for medlemsbedriftene
- Lunsj og nettverksmøte

[Meld deg på her](https://example.no/seminar)

> «Samarbeid på tvers av bedriftene gir oss lavere kostnader og lavere utslipp.»

Vennlig hilsen  \nKlyngeadministrasjonen
"""


@pytest.fixture
def worker(tmp_path):
    """One real worker (outbox backend), slowed down so the progress can be watched."""
    env = dict(
        os.environ,
        NEWSLETTER_RATE_PER_MINUTE="300",  # 5 emails a second: eight seconds for 40
        NEWSLETTER_BATCH_SIZE="5",
        WORKER_HOOK_SECONDS="1",
        NEWSLETTER_RECONCILE_SECONDS="1",
    )
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "worker.py")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process.log_path = tmp_path / "worker.log"
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def poll_until(condition, timeout: float, explain=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out\n{explain()}"
        time.sleep(0.1)


def _seed(app):
    with app.app_context():
        user = make_user("staff", email="redaktor@example.no")
        user.name = "Ingrid Haugen"
        logistics = db.session.scalar(db.select(Network).filter_by(name="Logistikk"))
        production = db.session.scalar(db.select(Network).filter_by(name="Produksjon"))
        companies = [
            make_company(
                "Kongsvinger Logistikk AS", municipality_number="3401", membership_status="member"
            ),
            make_company("Grue Sag AS", municipality_number="3417", membership_status="member"),
            make_company(
                "Eidskog Plast AS", municipality_number="3416", membership_status="prospect"
            ),
        ]
        ids = bulk_subscribers(RECIPIENTS, topics=("generelt", "logistikk"))
        for n, contact_id in enumerate(ids):
            contact = db.session.get(Contact, contact_id)
            contact.company_id = companies[n % 3].id
            contact.networks = [logistics] if n % 2 else [production]
        db.session.commit()


def _webhook_events(app, newsletter_id: int) -> None:
    """What SendGrid would report over the next days, for the statistics page."""
    with app.app_context():
        rows = db.session.scalars(
            db.select(NewsletterRecipient).where(NewsletterRecipient.newsletter_id == newsletter_id)
        ).all()
        for n, row in enumerate(rows):
            kinds = ["processed"]
            if n % 13 == 5:
                kinds.append("bounce")
            else:
                kinds.append("delivered")
                kinds += ["open"] if n % 4 != 0 else []
                kinds += ["click"] if n % 5 == 1 else []
            kinds += ["spamreport"] if n == 7 else []
            for kind in kinds:
                record_event(
                    {
                        "event": kind,
                        "email": f"sub{n}@example.no",
                        "timestamp": int(time.time()),
                        "sg_event_id": f"{kind}-{row.id}",
                        "klynge_newsletter": str(newsletter_id),
                        "klynge_recipient": str(row.id),
                    }
                )
        db.session.commit()
        # One person follows the unsubscribe link in the email.
        links.unsubscribe(db.session.get(Contact, rows[3].contact_id), ip="192.0.2.7")
        db.session.commit()


@pytest.mark.slow
def test_compose_preview_send_and_watch_the_progress_bar_reach_100(
    app, page, live_server, artifacts_dir, worker, monkeypatch
):
    monkeypatch.setitem(app.config, "NEWSLETTER_BATCH_SIZE", 5)  # eight batches: the bar moves
    _seed(app)
    page.set_viewport_size({"width": 1440, "height": 1640})
    login(page, live_server, "redaktor@example.no", PASSWORD)

    page.goto(f"{live_server.url}/newsletters/new")
    page.fill("input[name=subject]", "Høstseminar: grønn logistikk i Glåmdalen")
    page.fill("input[name=preheader]", "Program, påmelding og nettverksmøte 16. oktober")
    page.fill("textarea[name=body]", BODY)
    # (Polling from Python: the page's CSP forbids the eval that wait_for_function needs.)
    count = page.locator("[data-recipient-count]")
    expect(count).to_have_text("40")
    logistics = page.locator("ul#networks li:has-text('Logistikk') input")
    logistics.check()  # the network filter narrows the audience, live
    expect(count).to_have_text("20")
    logistics.uncheck()
    expect(count).to_have_text("40")
    preview = page.frame_locator("iframe[name=preview-frame]")
    preview.locator("text=Hei Ingrid,").wait_for()
    preview.locator("text=Elektrifisering av tungtransport i Glåmdalen").wait_for()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts_dir / "newsletter-editor.png"))
    page.locator("iframe[name=preview-frame]").screenshot(
        path=str(artifacts_dir / "newsletter-preview.png")
    )
    page.set_viewport_size({"width": 1440, "height": 1000})

    page.click("text=Lagre utkast")
    page.wait_for_url(lambda url: url.rstrip("/").split("/")[-1].isdigit())
    assert "40 mottakere" in page.inner_text(".send-card")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(".send-card button:has-text('Send nå')")
    page.locator("#progress").wait_for()
    page.frame_locator("iframe.email-preview").locator("text=Lunsj og nettverksmøte").wait_for()
    # Mid-way: the bar has moved, the page polls the JSON endpoint.
    bar = page.locator("progress.send-progress")
    poll_until(
        lambda: 0 < float(bar.get_attribute("value")) < 100,
        timeout=30,
        explain=lambda: worker.log_path.read_text(errors="replace")[-3000:],
    )
    # The time left is worded by the server, also after the page has polled.
    expect(page.locator("[data-progress=eta]")).to_have_text(re.compile(r"^(\d+ s|—)$"))
    page.screenshot(path=str(artifacts_dir / "newsletter-sending.png"), full_page=True)
    expect(page.locator("#progress[data-state=finished]")).to_be_visible(timeout=60_000)
    # "100" as the page's script sets it, "100.0" once the finished page has reloaded (it
    # does 0.6 s after the last poll: a busy machine often looks only after that).
    expect(bar).to_have_attribute("value", re.compile(r"^100(\.0)?$"))
    assert page.inner_text("[data-progress=done]") == "40"
    expect(page.locator(".send-card")).to_have_count(0)  # the page reloaded: sent
    page.frame_locator("iframe.email-preview").locator("text=Lunsj og nettverksmøte").wait_for()
    page.wait_for_load_state("load")  # the reloaded page's frame laid out, not half-way
    page.screenshot(path=str(artifacts_dir / "newsletter-sent.png"), full_page=True)

    with app.app_context():
        newsletter = db.session.scalar(db.select(Newsletter))
        assert newsletter.state == "finished"
        newsletter_id = newsletter.id
    _webhook_events(app, newsletter_id)
    page.click("text=Statistikk")
    page.locator("h1:has-text('Statistikk')").wait_for()
    assert "Per nettverk" in page.inner_text("main")
    page.screenshot(path=str(artifacts_dir / "newsletter-statistics.png"), full_page=True)


def test_time_left_follows_the_language_and_the_archive_is_switched_from_the_page(
    app, page, live_server, artifacts_dir, monkeypatch
):
    with app.app_context():
        make_user("staff", email="redaktor@example.no")
        company = make_company("Kongsvinger Logistikk AS", municipality_number="3401")
        make_subscriber("kari@example.no", company_id=company.id, is_primary_contact=True)
        newsletter = make_newsletter(
            "Vårnytt fra klyngen", municipalities=("3401", "3417"), roles=("primary",)
        )
        services.start_sending(newsletter)  # no worker: it stays "sending"
        db.session.commit()
        url = f"{live_server.url}/newsletters/{newsletter.id}"
    # A long send: the page shows one estimate, each poll of the JSON a shorter one.
    progress, calls = services.progress, []

    def slow_progress(newsletter):
        calls.append(1)
        return {
            **progress(newsletter),
            "rate": 0.5,
            "eta_seconds": 7830 if len(calls) == 1 else 185,
        }

    monkeypatch.setattr(services, "progress", slow_progress)
    login(page, live_server, "redaktor@example.no", PASSWORD)

    page.goto(url)
    eta = page.locator("[data-progress=eta]")
    expect(eta).to_have_text("2 t 10 min")
    expect(eta).to_have_text("3 min 5 s")  # polled
    facts = page.inner_text("aside")
    assert "Kongsvinger (3401), Grue (3417)" in facts and "Hovedkontakter" in facts

    calls.clear()
    page.click("button:has-text('English')")
    page.wait_for_url(url)
    expect(eta).to_have_text("2 h 10 min")
    expect(eta).to_have_text("3 min 5 s")
    assert "Primary contacts" in page.inner_text("aside")

    page.click("button:has-text('Publish in the archive')")
    expect(page.locator(".flash")).to_contain_text("published in the public archive")
    page.frame_locator("iframe.email-preview").locator("text=Kongsvinger").wait_for()
    page.screenshot(path=str(artifacts_dir / "newsletter-detail-en.png"), full_page=True)
    page.goto(f"{live_server.url}/nyhetsbrev")
    expect(page.locator(".archive-list")).to_contain_text("Vårnytt fra klyngen")

    page.goto(url)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Withdraw from the archive')")
    expect(page.locator(".flash")).to_contain_text("withdrawn from the public archive")
    page.goto(f"{live_server.url}/nyhetsbrev")
    expect(page.locator(".archive-list")).to_have_count(0)
