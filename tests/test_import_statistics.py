"""After a bulk import PostgreSQL's planner knows the tables' new size at once.

Without fresh statistics a table filled moments ago looks empty (or as small as it was)
to the planner, and the newsletter audience's consent check became a nested loop over
thousands of contacts until autovacuum came round. SQLite keeps no statistics unless
asked (its planner's fixed guesses do not depend on a table's size): nothing to do there.
"""

import pytest
from sqlalchemy import text

from crm.extensions import db
from crm.members.normalize import make_orgnr
from tests.factories import make_company

pytestmark = pytest.mark.skipif(
    __import__("os").environ.get("CRM_TEST_DB") != "postgres",
    reason="planner statistics are refreshed on PostgreSQL only",
)


def _orgnrs(count: int) -> list[str]:
    numbers, base = [], 92000000
    while len(numbers) < count:
        orgnr = make_orgnr(str(base))
        if orgnr:
            numbers.append(orgnr)
        base += 1
    return numbers


def _now() -> object:
    return db.session.scalar(text("SELECT clock_timestamp()"))


def _analyzed_since(table: str, since) -> bool:
    db.session.commit()  # a fresh snapshot of the statistics
    last = db.session.scalar(
        text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = :t"), {"t": table}
    )
    return last is not None and last >= since


def _reltuples(table: str) -> float:
    query = text("SELECT reltuples FROM pg_class WHERE relname = :t")
    return db.session.scalar(query, {"t": table})


def _import_companies(app, runner, tmp_path, count: int, *options: str):
    """`crm companies import` of `count` new companies; the time just before it."""
    rows = "".join(f"{orgnr};Bedrift {i} AS\n" for i, orgnr in enumerate(_orgnrs(count)))
    path = tmp_path / "companies.csv"
    path.write_text("orgnr;name\n" + rows)
    with app.app_context():
        since = _now()
    result = runner.invoke(args=["companies", "import", *options, str(path)])
    assert result.exit_code == 0, result.output
    return since


def test_a_bulk_company_import_leaves_the_planner_knowing_the_new_rows(app, runner, tmp_path):
    since = _import_companies(app, runner, tmp_path, 600)
    with app.app_context():
        assert _analyzed_since("company", since)
        assert _analyzed_since("search_term", since)
        assert _reltuples("company") == 600


def test_a_bulk_contact_import_leaves_the_planner_knowing_the_new_rows(app, runner, tmp_path):
    with app.app_context():
        orgnr = make_company("Grue Bygg AS").orgnr
        since = _now()
    rows = "".join(f"Kari{i};Nordmann;kari{i}@grue.no;{orgnr}\n" for i in range(600))
    path = tmp_path / "contacts.csv"
    path.write_text("first_name;last_name;email;orgnr\n" + rows)
    result = runner.invoke(args=["contacts", "import", str(path)])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert _analyzed_since("contact", since)
        assert _reltuples("contact") == 600


def test_a_small_import_leaves_the_statistics_to_autovacuum(app, runner, tmp_path):
    since = _import_companies(app, runner, tmp_path, 20)
    with app.app_context():
        assert not _analyzed_since("company", since)


def test_a_rolled_back_import_analyzes_nothing(app, runner, tmp_path):
    since = _import_companies(app, runner, tmp_path, 600, "--dry-run")
    with app.app_context():
        assert not _analyzed_since("company", since)


def test_demo_data_leaves_the_planner_knowing_the_new_rows(app, runner):
    with app.app_context():
        since = _now()
    result = runner.invoke(args=["demo", "--companies", "150", "--subscribers", "400"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert _analyzed_since("company", since)
        assert _analyzed_since("contact", since)
        assert _reltuples("company") == 150
