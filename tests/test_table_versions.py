"""The results page's counts are kept in Redis until a table they read changes.

A staff member who records an activity, moves a company or takes a contact out of a
network sees the results page count it on the next view; a view with nothing changed
reads the counts from Redis instead of the database; a write that is rolled back, or a
write to a table the counts don't read, keeps them.
"""

import threading
from datetime import date

from sqlalchemy import func, select, update

from crm.extensions import db
from crm.members.models import Activity, Company, Contact
from crm.table_versions import VERSIONS_KEY, cached_many
from tests.cached_figures import counting_queries
from tests.factories import make_company, make_contact


def _figure(html: str, key: str) -> str:
    return html.split(f'data-figure="{key}">', 1)[1].split("<", 1)[0]


def _two_members() -> dict:
    a = make_company("Alfa Mek AS", municipality_number="3401", employees=12, nace_code="25.110",
                     member_since=date(2020, 1, 1), membership_status="member")  # fmt: skip
    b = make_company("Beta Sag AS", municipality_number="3401", employees=40, nace_code="16.100",
                     member_since=date(2020, 1, 1), membership_status="member")  # fmt: skip
    contact = make_contact("Kari", "Alfa", email="kari@alfa.no", company_id=a.id, networks=["HR"])
    db.session.commit()
    return {"a": a.id, "b": b.id, "contact": contact.id}


def _statements(app, client, url: str) -> tuple[str, list[str]]:
    with app.app_context(), counting_queries() as seen:
        html = client.get(url).get_data(as_text=True)
    return html, list(seen)


def test_a_new_activity_is_counted_on_the_next_view(app, auth, client):
    with app.app_context():
        ids = _two_members()
    auth.login("staff")
    html = client.get("/reports/2026").get_data(as_text=True)
    assert (_figure(html, "members"), _figure(html, "active")) == ("2", "1")

    with app.app_context():
        db.session.add(Activity(kind="meeting", occurred_on=date(2026, 5, 5), summary="Besøk",
                                company_id=ids["b"]))  # fmt: skip
        db.session.commit()
    html = client.get("/reports/2026").get_data(as_text=True)
    assert _figure(html, "active") == "2"


def test_core_updates_and_deletes_are_noticed_too(app, auth, client):
    with app.app_context():
        ids = _two_members()
    auth.login("staff")
    client.get("/reports/2026")
    with app.app_context():
        # Bulk statements, not ORM objects: the size band and the network member go.
        db.session.execute(update(Company).where(Company.id == ids["b"]).values(employees=500))
        db.session.execute(
            db.text("DELETE FROM contact_network WHERE contact_id = :id"), {"id": ids["contact"]}
        )
        db.session.commit()
    html = client.get("/reports/2026").get_data(as_text=True)
    assert _figure(html, "active") == "0"
    assert "250+" in html.split('id="sizes"', 1)[1].split("</section>", 1)[0]


def test_an_unchanged_second_view_reads_the_counts_from_redis(app, auth, client):
    with app.app_context():
        _two_members()
    auth.login("staff")
    first_html, first = _statements(app, client, "/reports/2026")
    second_html, second = _statements(app, client, "/reports/2026")
    counting = [s for s in first if "GROUP BY" in s.upper() or "count(" in s.lower()]
    assert counting, "the first view counts in the database"
    assert not [s for s in second if s in counting]
    assert len(second) < len(first)
    assert _figure(second_html, "active") == _figure(first_html, "active") == "1"


def test_a_rolled_back_write_or_an_unread_table_keeps_the_versions(app, auth, client):
    from crm.queue import get_redis

    with app.app_context():
        ids = _two_members()
        redis = get_redis()
        before = redis.hgetall(VERSIONS_KEY)
        db.session.execute(update(Company).where(Company.id == ids["a"]).values(employees=1))
        db.session.rollback()
        assert redis.hgetall(VERSIONS_KEY) == before
        # The audit log and the search index are not read by any cached count.
        contact = db.session.get(Contact, ids["contact"])
        contact.phone = "+4790000000"
        db.session.commit()
        after = redis.hgetall(VERSIONS_KEY)
        assert after[b"contact"] == str(int(before[b"contact"]) + 1).encode()
        assert after[b"company"] == before[b"company"]  # the rolled back update
        assert b"audit_entry" not in after and b"search_term" not in after


def test_without_redis_the_page_counts_every_time(app, auth, client):
    with app.app_context():
        ids = _two_members()
    auth.login("staff")
    dead = app.extensions.pop("crm_redis", None)
    url = app.config["REDIS_URL"]
    app.config["REDIS_URL"] = "redis://127.0.0.1:1/0"
    try:
        assert _figure(client.get("/reports/2026").get_data(as_text=True), "active") == "1"
        with app.app_context():
            db.session.add(Activity(kind="call", occurred_on=date(2026, 2, 2), summary="Ring",
                                    company_id=ids["b"]))  # fmt: skip
            db.session.commit()  # the bump fails quietly: the commit stands
        assert _figure(client.get("/reports/2026").get_data(as_text=True), "active") == "2"
    finally:
        app.extensions.pop("crm_redis", None)
        if dead is not None:
            app.extensions["crm_redis"] = dead
        app.config["REDIS_URL"] = url


def test_figures_counted_with_this_transactions_own_writes_are_not_kept(app, auth, client):
    from crm.reports.services import year_report

    with app.app_context():
        ids = _two_members()
    with app.test_request_context():
        db.session.add(Activity(kind="call", occurred_on=date(2026, 3, 3), summary="Ring",
                                company_id=ids["b"]))  # fmt: skip
        db.session.flush()
        assert year_report(date(2026, 1, 1), date(2026, 12, 31)).active == 2
        db.session.rollback()
    auth.login("staff")
    assert _figure(client.get("/reports/2026").get_data(as_text=True), "active") == "1"


def test_parts_to_count_are_counted_side_by_side_each_in_its_own_session(app_ctx):
    """The results page counts its missing parts two at a time (the database counts them
    on two connections at once): each part in a thread with its own session, the figures
    the same as one after the other."""
    make_company("Alfa Mek AS")
    both_running = threading.Barrier(2, timeout=5)  # one at a time: BrokenBarrierError
    sessions = []

    def part(number: int):
        def compute():
            both_running.wait()
            sessions.append(db.session())
            return [number, db.session.scalar(select(func.count(Company.id)))]

        return compute

    parts = {"a": (("company",), part(1)), "b": (("company",), part(2))}
    assert cached_many("side-by-side", parts, threads=2) == {"a": [1, 1], "b": [2, 1]}
    assert len({id(s) for s in sessions}) == 2 and db.session() not in sessions
    # Kept like any other figures: the next call counts nothing.
    assert cached_many("side-by-side", {"a": (("company",), lambda: 1 / 0)}) == {"a": [1, 1]}
