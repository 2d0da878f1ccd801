"""Every staff page is usable on a phone: at 390 × 844 nothing is wider than the screen.

The pages are found from the app's own url_map (every GET route that needs a login),
with ids filled in from seeded demo data, so pages other areas add later are measured
too. Wide tables scroll inside their own container; the page itself never scrolls
sideways. One screenshot per page goes to test-artifacts/phone/ for a person to look at.
"""

import contextlib
import re

import pytest
from sqlalchemy import select

from crm.extensions import db
from crm.mail.services import queue_email
from crm.timeutil import utcnow
from tests.browser import login
from tests.factories import PASSWORD, make_newsletter, make_subscriber, make_user
from tests.routes import is_public

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
# Endpoints that are not pages (files, JSON, redirects) and need no measuring.
NOT_PAGES = re.compile(r"(\.(pdf|csv|json|ics|xml|xlsx|eml|png|svg)$)|/(export|download)\b")


@contextlib.contextmanager
def staff_page(browser, live_server, seeded, viewport: dict, **options):
    """A page of a fresh browser context in Norwegian, logged in as the seeded admin."""
    context = browser.new_context(viewport=viewport, locale="nb-NO", **options)
    try:
        page = context.new_page()
        login(page, live_server, seeded, PASSWORD)
        yield page
    finally:
        context.close()


def _table_for(argument: str):
    """The table whose ids an URL argument names: `invoice_id` → `invoice`."""
    name = argument.removesuffix("_id")
    tables = db.metadata.tables
    for candidate in (name, name.rstrip("s"), f"{name}s", f"email_{name}", f"fee_{name}"):
        if candidate in tables and "id" in tables[candidate].columns:
            return tables[candidate]
    return None


def _filled_url(app, rule) -> str | None:
    """The rule's URL with the smallest existing id of each argument; None if one is missing."""
    from flask import url_for

    args = {}
    for name in rule.arguments:
        converter = type(rule._converters[name]).__name__
        if converter == "AnyConverter":
            args[name] = sorted(rule._converters[name].items)[0]
            continue
        if converter not in ("IntegerConverter", "IdConverter"):
            return None  # tokens and other strings: no page to find by guessing
        if name == "year":
            args[name] = utcnow().year  # the demo's fee year
            continue
        table = _table_for(name)
        if table is None:
            return None
        value = db.session.scalar(select(db.func.min(table.c.id)))
        if value is None:
            return None
        args[name] = value
    return url_for(rule.endpoint, **args)


def _staff_pages(app) -> list[str]:
    urls = set()
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if is_public(rule.endpoint) or "GET" not in rule.methods:
                continue
            url = _filled_url(app, rule)
            if url and not NOT_PAGES.search(url):
                urls.add(url)
    return sorted(urls)


@pytest.fixture
def seeded(app, runner):
    result = runner.invoke(args=["demo", "--companies", "8", "--subscribers", "15"])
    assert result.exit_code == 0, result.output
    with app.test_request_context():
        make_subscriber("kari.nordmann.med.et.langt.navn@eksempel-bedriften.example.no")
        queue_email(
            "kari.nordmann.med.et.langt.navn@eksempel-bedriften.example.no",
            "mail/test",
            {"name": "Kari"},
            category="test",
        )
        db.session.commit()
        make_newsletter("Høstens seminarprogram for alle nettverkene i klyngen")
        admin = make_user("admin")
        return admin.email


@pytest.mark.slow
def test_every_staff_page_fits_a_phone_without_sideways_scrolling(
    app, browser, live_server, seeded, artifacts_dir
):
    folder = artifacts_dir / "phone"
    folder.mkdir(exist_ok=True)
    with staff_page(browser, live_server, seeded, PHONE, device_scale_factor=1) as page:
        page.set_default_timeout(20_000)
        urls = _staff_pages(app)
        assert len(urls) >= 25, urls
        too_wide, measured = [], 0
        for url in urls:
            response = page.goto(live_server.url + url)
            if response is None or response.status != 200:
                continue
            if "text/html" not in response.headers.get("content-type", ""):
                continue
            measured += 1
            width = page.evaluate("document.documentElement.scrollWidth")
            name = re.sub(r"[^a-z0-9]+", "-", url.lower()).strip("-") or "home"
            page.screenshot(path=str(folder / f"{name}.png"), full_page=False)
            if width > PHONE["width"]:
                widest = page.evaluate(_WIDEST_ELEMENT, PHONE["width"])
                too_wide.append(f"{url}: {width}px ({widest})")
        assert measured >= 25
        assert not too_wide, "wider than a 390 px phone:\n" + "\n".join(too_wide)


def test_the_menu_is_reachable_on_a_phone(app, browser, live_server, seeded, artifacts_dir):
    with staff_page(browser, live_server, seeded, PHONE) as page:
        page.goto(live_server.url + "/companies")
        links = page.locator(".mainnav a")
        assert links.count() >= 5
        # Closed at first: the menu does not push the page down.
        assert not links.last.is_visible()
        page.click(".nav-toggle")
        for i in range(links.count()):
            link = links.nth(i)
            assert link.is_visible()
            box = link.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        page.screenshot(path=str(artifacts_dir / "phone" / "menu-open.png"))
        links.last.click()
        page.wait_for_load_state()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert "no-js" not in (page.get_attribute("html", "class") or "")


def _sent_newsletter_with_figures(app) -> int:
    """A newsletter whose recipients all count as sent: its statistics have table rows."""
    from crm.newsletters.models import NewsletterRecipient
    from tests.factories import start_newsletter

    with app.test_request_context():
        newsletter = make_newsletter("Nytt fra klyngen med tall per kommune")
        start_newsletter(newsletter)
        db.session.execute(
            db.update(NewsletterRecipient)
            .where(NewsletterRecipient.newsletter_id == newsletter.id)
            .values(state="sent")
        )
        db.session.commit()
        return newsletter.id


def _course_with_most_sessions() -> int:
    from crm.events.models import EventSession

    return db.session.execute(
        select(EventSession.event_id)
        .group_by(EventSession.event_id)
        .order_by(db.func.count().desc())
        .limit(1)
    ).scalar_one()


# How many lines an element's own text takes (a one-word label broken inside the word
# takes two or more).
# Whether an element shows all of its content (nothing scrolled or cut off sideways).
_FITS = "(el) => el.scrollWidth <= el.clientWidth"
_TEXT_LINES = """(el) => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
  return tops.size;
}"""


def test_figures_session_tabs_and_fee_tiers_scroll_in_their_own_box_on_a_phone(
    app, browser, live_server, seeded, artifacts_dir
):
    newsletter_id = _sent_newsletter_with_figures(app)
    with app.app_context():
        course_id = _course_with_most_sessions()
    pages = {
        "statistics": f"/newsletters/{newsletter_id}/statistics",
        "checkin": f"/events/{course_id}/checkin",
        "fee-schedule-form": f"/fees/schedules/edit?year={utcnow().year}",
    }
    with staff_page(browser, live_server, seeded, PHONE) as page:
        for name, url in pages.items():
            assert page.goto(live_server.url + url).status == 200, url
            page.screenshot(path=str(artifacts_dir / "phone" / f"wide-{name}.png"), full_page=True)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{url}: {width}px"
        # Every session of the course is reachable in the strip of tabs.
        page.goto(live_server.url + pages["checkin"])
        assert page.locator(".session-tabs a").count() >= 2
        # Each fee tier's amount is readable ("25000,00"), not cut to a few digits.
        page.goto(live_server.url + pages["fee-schedule-form"])
        amounts = page.locator("input[name$='-amount']")
        assert amounts.count() >= 2
        for i in range(amounts.count()):
            amount = amounts.nth(i).element_handle()
            assert page.evaluate(_FITS, amount), i


def test_labels_addresses_and_buttons_keep_their_words_whole_on_a_phone(
    app, browser, live_server, seeded, artifacts_dir
):
    from crm.members.models import Company

    with app.app_context():
        company_id = db.session.scalar(select(db.func.min(Company.id)))
    with staff_page(browser, live_server, seeded, PHONE) as page:
        # The change history: "Organisasjonsnummer" on one line, not "Organisasjon/snummer".
        page.goto(f"{live_server.url}/companies/{company_id}")
        labels = page.locator("table.changes th")
        assert labels.count() >= 5
        for i in range(labels.count()):
            label = labels.nth(i)
            if " " not in label.inner_text().strip():
                assert page.evaluate(_TEXT_LINES, label.element_handle()) == 1, label.inner_text()
        # Nor a value: "Aksjeselskap", not "Aksjeselska/p".
        values = page.locator("table.changes td.new")
        for i in range(values.count()):
            value = values.nth(i)
            text = value.inner_text().strip()
            if text and " " not in text and len(text) <= 20:
                assert page.evaluate(_TEXT_LINES, value.element_handle()) == 1, text
        page.screenshot(path=str(artifacts_dir / "phone" / "words-company-history.png"))
        # The contact list's addresses wrap at most a few times, not a letter a line.
        page.goto(f"{live_server.url}/contacts")
        cell = page.locator("td.email-cell").first
        assert cell.bounding_box()["width"] >= 150
        page.screenshot(path=str(artifacts_dir / "phone" / "words-contact-list.png"))


@pytest.mark.parametrize("language", ["nb", "en"])
def test_every_menu_link_is_in_sight_on_a_1280_px_screen(
    app, browser, live_server, seeded, artifacts_dir, language
):
    """An admin's menu (eleven links, some 1,200 px in Norwegian) was cut off after
    "Arrangementer" at 1280 px; the rest hid behind a strip scrolled sideways."""
    with staff_page(browser, live_server, seeded, {"width": 1280, "height": 800}) as page:
        page.goto(f"{live_server.url}/companies?lang={language}")
        links = page.locator(".mainnav a")
        assert links.count() >= 10  # an admin's
        assert "Administrasjon" in page.locator(".mainnav").inner_text() or language == "en"
        for i in range(links.count()):
            box = links.nth(i).bounding_box()
            assert links.nth(i).is_visible() and box["x"] >= 0 and box["x"] + box["width"] <= 1280
        nav = page.locator(".mainnav").element_handle()
        assert page.evaluate(_FITS, nav)
        page.screenshot(path=str(artifacts_dir / f"menu-1280-{language}.png"))


# The element that sticks out furthest, to say what to fix (its tag, classes and right edge).
_WIDEST_ELEMENT = """(limit) => {
  let worst = null, right = limit;
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.right > right + 0.5) {
      let scroller = el.parentElement, clipped = false;
      while (scroller && scroller !== document.body) {
        const s = getComputedStyle(scroller);
        if (s.overflowX !== 'visible') { clipped = true; break; }
        scroller = scroller.parentElement;
      }
      if (!clipped) { worst = el; right = r.right; }
    }
  }
  if (!worst) return 'nothing found';
  const name = worst.tagName.toLowerCase() + '.' + [...worst.classList].join('.');
  return name + ' right=' + Math.round(right);
}"""


@pytest.mark.parametrize("language", ["nb", "en"])
def test_tables_with_buttons_fit_their_column_at_1280_px(
    app, browser, live_server, seeded, artifacts_dir, language
):
    """An event's "Meld av" and a network member's "Fjern" were scrolled out of sight:
    long addresses and a row of buttons kept the tables wider than their column; so was
    what a company paid, in the fee history beside its page."""
    from crm.fees.models import Invoice
    from crm.members.models import Network

    with app.app_context():
        course_id = _course_with_most_sessions()
        network_id = db.session.scalar(select(db.func.min(Network.id)))
        company_id = db.session.scalar(select(db.func.min(Invoice.company_id)))
    with staff_page(browser, live_server, seeded, {"width": 1280, "height": 900}) as page:
        pages = {
            "event": (f"/events/{course_id}", ".table-wrap:has(td button)"),
            "network": (f"/networks/{network_id}", ".table-wrap:has(td button)"),
            "company-fees": (f"/companies/{company_id}", "#fees .table-wrap"),
        }
        for name, (url, tables) in pages.items():
            page.goto(f"{live_server.url}{url}?lang={language}")
            wraps = page.locator(tables)
            assert wraps.count() >= 1, url
            for i in range(wraps.count()):
                wrap = wraps.nth(i).element_handle()
                assert page.evaluate(_FITS, wrap), url
            page.screenshot(path=str(artifacts_dir / f"{name}-table-1280-{language}.png"))


def test_the_month_view_shows_each_events_start_time_whole_on_a_phone(
    app, browser, live_server, seeded, artifacts_dir
):
    from crm.events.models import EventSession

    with app.app_context():
        first = db.session.scalar(select(db.func.min(EventSession.starts_at)))
    with staff_page(browser, live_server, seeded, PHONE) as page:
        page.goto(f"{live_server.url}/events/month?year={first.year}&month={first.month}")
        events = page.locator("a.month-event")
        assert events.count() >= 1
        for i in range(events.count()):
            time = events.nth(i).locator(".month-event-time").element_handle()
            assert page.evaluate("(el) => el.getBoundingClientRect().width > 0", time)
            link = events.nth(i).element_handle()
            assert page.evaluate(_FITS, link)
            assert events.nth(i).get_attribute("href")
        page.screenshot(path=str(artifacts_dir / "phone" / "month-view.png"))
