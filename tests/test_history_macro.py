"""The change history is one macro (templates/macros/ui.html `history_card`), not markup
copied into each detail and settings page."""

from pathlib import Path

from tests.factories import make_company

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def test_no_page_builds_its_own_history_card():
    copies = [
        str(path.relative_to(TEMPLATES))
        for path in TEMPLATES.rglob("*.html")
        if path.name != "ui.html" and "audit_history(" in path.read_text(encoding="utf-8")
    ]
    assert copies == []
    users = [p for p in TEMPLATES.rglob("*.html") if "history_card(" in p.read_text("utf-8")]
    assert len(users) >= 5


def test_the_company_page_shows_its_history_through_the_macro(app, client, auth):
    auth.login("staff")
    with app.app_context():
        company = make_company(name="Historikk AS")
    page = client.get(f"/companies/{company.id}").get_data(as_text=True)
    assert '<section class="card history-card" id="history">' in page
    assert "Historikk" in page and "Opprettet" in page
