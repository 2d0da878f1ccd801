"""One signed SendGrid webhook POST of many events, timed through the app (issue 15).

    .venv/bin/python bench/webhook_burst.py [--events 10000] [--rounds 3]
    BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/klynge_webhook \\
        .venv/bin/python bench/webhook_burst.py

The scratch database (SQLite in a temporary folder unless BENCH_DATABASE_URL is set; a
PostgreSQL one has its tables dropped and made anew) gets a sent newsletter whose ledger
has a row per event, with subscribers behind it. Each round posts one body of `--events`
events as SendGrid sends them: for the newsletter's rows `delivered` and `open` (its
custom args name the row), one in a hundred a bounce (`--bounce-every`; the subscriber's
consent ends, the address is suppressed), one in two hundred a spam report, and a few
events repeated in the body. Printed per round: the answer and the time of the POST,
through Flask's test client (no HTTP server: the app's own time). Each round's events
are new (fresh sg_event_ids); the rows' first events are set in round one, later rounds
find them set. `--profile` prints a cProfile of the first round.
"""

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The load test's signer (this script runs from bench/, beside it).
from load_test import make_signer  # noqa: E402


def _prepare(app, recipients: int) -> tuple[int, list[tuple[int, str]]]:
    """A sent newsletter to `recipients` subscribers: its id and (row id, address)s."""
    from flask_migrate import upgrade
    from sqlalchemy import select, text

    from crm.extensions import db
    from crm.members.models import Contact
    from crm.newsletters import ledger, services
    from crm.newsletters.models import NewsletterRecipient
    from tests.factories import bulk_subscribers, make_newsletter

    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()
    with app.test_request_context():
        bulk_subscribers(recipients)
        db.session.commit()
        newsletter = make_newsletter()
        services.start_sending(newsletter)
        ledger.write_planned(newsletter.id, None)  # what the fill job writes (no worker here)
        R = NewsletterRecipient
        ledger.mark_sent(R.newsletter_id == newsletter.id)
        db.session.commit()
        rows = db.session.execute(
            select(R.id, Contact.email)
            .join(Contact, Contact.id == R.contact_id)
            .where(R.newsletter_id == newsletter.id)
            .order_by(R.id)
        ).all()
        return newsletter.id, [(row_id, email) for row_id, email in rows]


def _events(
    newsletter_id: int, rows: list[tuple[int, str]], round_: int, bounce_every: int
) -> list[dict]:
    events = []
    for i, (row_id, email) in enumerate(rows):
        bounce = i % bounce_every == bounce_every - 1
        kind = "bounce" if bounce else "spamreport" if i % 200 == 50 else None
        kind = kind or ("delivered", "open")[(i + round_) % 2]
        event = {
            "email": email,
            "timestamp": int(time.time()) - 60,
            "event": kind,
            "sg_event_id": f"burst-{round_}-{i}",
            "sg_message_id": f"sg{row_id}.filter0001",
            "klynge_newsletter": str(newsletter_id),
            "klynge_recipient": str(row_id),
        }
        if kind == "bounce":
            event.update(type="bounce", reason="550 5.1.1 unknown user")
        events.append(event)
    return events + events[:25]  # SendGrid repeats itself


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile the first round")
    parser.add_argument("--bounce-every", type=int, default=100, help="1: all bounces")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="klynge-webhook-"))
    os.environ["DATABASE_URL"] = os.environ.get(
        "BENCH_DATABASE_URL", f"sqlite:///{work / 'webhook.sqlite3'}"
    )
    os.environ["CRM_INSTANCE_PATH"] = str(work / "instance")
    os.environ["RATELIMIT_ENABLED"] = "0"
    if not os.environ.get("REDIS_URL"):
        from crm.redis_server import ensure_embedded_redis

        os.environ["REDIS_URL"] = ensure_embedded_redis(work / "redis")
    from crm import create_app

    public_key, signed = make_signer()
    app = create_app({"SENDGRID_WEBHOOK_PUBLIC_KEY": public_key})
    newsletter_id, rows = _prepare(app, args.events)
    database = "PostgreSQL" if os.environ["DATABASE_URL"].startswith("postgresql") else "SQLite"
    print(f"{database}, {len(rows):,} ledger rows; load average {os.getloadavg()[0]:.1f}")
    client = app.test_client()
    for round_ in range(args.rounds):
        body = json.dumps(_events(newsletter_id, rows, round_, args.bounce_every)).encode()
        profiler = cProfile.Profile() if args.profile and round_ == 0 else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        response = client.post("/webhooks/sendgrid", data=body, headers=signed(body))
        seconds = time.perf_counter() - started
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        answer = f"HTTP {response.status_code} {response.get_json()}"
        print(f"  round {round_ + 1}: {answer} {seconds:.2f} s")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
