"""The import page: upload, preview every change, confirm; nothing written before that."""

import io
import re

from crm.audit import AuditEntry
from crm.extensions import db
from crm.members.models import Company
from crm.members.normalize import make_orgnr
from tests.factories import api_page, brreg_unit, make_company, make_user

ORGNR_A, ORGNR_B, ORGNR_C = make_orgnr("92360901"), make_orgnr("98765432"), make_orgnr("91234568")


def _upload(client, data: bytes, filename: str = "enheter.json"):
    return client.post(
        "/companies/import",
        data={"file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def _hidden(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


def _company(orgnr: str) -> Company | None:
    return db.session.scalar(db.select(Company).filter_by(orgnr=orgnr))


def test_upload_preview_then_confirm_imports_the_file(app, client, auth):
    user = auth.login("staff")
    with app.app_context():
        make_company("Sagstua Trelast AS", orgnr=ORGNR_A, employees=20)
    page = client.get("/companies/import")
    assert page.status_code == 200
    assert 'enctype="multipart/form-data"' in page.get_data(as_text=True)

    response = _upload(
        client,
        api_page(
            brreg_unit(ORGNR_A, "Sagstua Trelast AS", antallAnsatte=24),
            brreg_unit(ORGNR_B, "Skarnes Betong AS", underAvvikling=True),
        ),
    )
    assert response.status_code == 302
    preview_url = response.headers["Location"]
    assert re.fullmatch(r"/companies/import/[A-Za-z0-9_-]{43}", preview_url)
    with app.app_context():
        assert _company(ORGNR_B) is None  # a preview writes nothing

    html = client.get(preview_url).get_data(as_text=True)
    assert "Skarnes Betong AS" in html
    assert "Sagstua Trelast AS" in html
    assert re.search(r'class="old">20</td>.*?class="new">24</td>', html, re.S)
    assert "Importer 2 bedrifter" in html or "Import 2 companies" in html

    response = client.post(
        "/companies/import/confirm",
        data={"token": _hidden(html, "token"), "fingerprint": _hidden(html, "fingerprint")},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/companies"
    with app.app_context():
        assert _company(ORGNR_A).employees == 24
        new = _company(ORGNR_B)
        assert (new.membership_status, new.winding_up) == ("prospect", True)
        entry = db.session.scalar(
            db.select(AuditEntry).filter_by(record_type="company", record_id=new.id)
        )
        assert (entry.actor, entry.user_id) == ("import: enheter.json", user.id)

    # The upload is gone once used: confirming twice imports nothing twice.
    again = client.post(
        "/companies/import/confirm",
        data={"token": _hidden(html, "token"), "fingerprint": _hidden(html, "fingerprint")},
    )
    assert again.headers["Location"] == "/companies/import"


def test_preview_lists_errors_with_line_numbers_and_offers_no_confirm(app, client, auth):
    auth.login("staff")
    csv = f"orgnr;name;employees\n{ORGNR_A};God AS;4\n{ORGNR_B};Dårlig AS;fire\n".encode()
    response = _upload(client, csv, "medlemmer.csv")
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    assert re.search(r'<tr class="row-error">\s*<td class="line-no">3</td>', html)
    assert "fire" in html
    assert "/companies/import/confirm" not in html

    token = response.headers["Location"].rsplit("/", 1)[1]
    forced = client.post("/companies/import/confirm", data={"token": token, "fingerprint": "x"})
    assert forced.status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Company.id))) == 0


def test_preview_shows_warnings_apart_from_errors_and_still_offers_confirm(client, auth):
    auth.login("staff")
    csv = f"orgnr;name;hobby\n{ORGNR_A};God AS;golf\n".encode()
    response = _upload(client, csv, "medlemmer.csv")
    html = client.get(response.headers["Location"], headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )
    assert re.search(r'<tr class="row-warning">\s*<td class="line-no">1</td>', html)
    assert "hobby" in html and "row-error" not in html
    assert "/companies/import/confirm" in html


def test_a_tampered_or_foreign_token_is_refused_and_nothing_written(app, client, auth):
    other = None
    with app.app_context():
        other = make_user("staff")
    # Another staff member uploads a file...
    auth.login(user=other)
    response = _upload(client, f"orgnr,name\n{ORGNR_A},Fremmed AS\n".encode(), "x.csv")
    token = response.headers["Location"].rsplit("/", 1)[1]
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    fingerprint = _hidden(html, "fingerprint")
    auth.logout()
    # ...and someone else tries to use (or guess) tokens.
    auth.login("staff")
    for bad in (token, "A" * 43, "../../secret_key", token[:-1] + "%2F", ""):
        response = client.post(
            "/companies/import/confirm", data={"token": bad, "fingerprint": fingerprint}
        )
        assert response.status_code == 302
        assert response.headers["Location"] == "/companies/import"
    assert client.get(f"/companies/import/{token}").headers["Location"] == "/companies/import"
    assert client.get("/companies/import/..%2Fsecret_key").status_code in (302, 404)
    with app.app_context():
        assert _company(ORGNR_A) is None


def test_a_changed_database_sends_the_person_back_to_a_fresh_preview(app, client, auth):
    auth.login("staff")
    with app.app_context():
        make_company("Flisa Plast AS", orgnr=ORGNR_A, employees=5)
    response = _upload(client, f"orgnr,employees\n{ORGNR_A},9\n".encode(), "ansatte.csv")
    preview_url = response.headers["Location"]
    html = client.get(preview_url).get_data(as_text=True)
    with app.app_context():  # someone edits the company meanwhile
        _company(ORGNR_A).employees = 7
        db.session.commit()
    response = client.post(
        "/companies/import/confirm",
        data={"token": _hidden(html, "token"), "fingerprint": _hidden(html, "fingerprint")},
    )
    assert response.headers["Location"] == preview_url
    with app.app_context():
        assert _company(ORGNR_A).employees == 7


def test_cancel_discards_the_upload(app, client, auth):
    auth.login("staff")
    response = _upload(client, f"orgnr,name\n{ORGNR_A},Avbrutt AS\n".encode(), "x.csv")
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    data = {"token": _hidden(html, "token"), "fingerprint": _hidden(html, "fingerprint")}
    assert client.post("/companies/import/cancel", data=data).status_code == 302
    assert client.post("/companies/import/confirm", data=data).headers["Location"] == (
        "/companies/import"
    )
    with app.app_context():
        assert _company(ORGNR_A) is None


def test_upload_needs_a_file_and_refuses_big_ones(app, client, auth):
    auth.login("staff")
    response = client.post("/companies/import", data={}, content_type="multipart/form-data")
    assert response.status_code == 200
    big = _upload(client, b"orgnr\n" + b"9" * (10 * 1024 * 1024), "big.csv")
    assert big.status_code == 200
    html = big.get_data(as_text=True)
    assert "10 MB" in html


def test_unreadable_file_shows_a_clear_message(app, client, auth):
    auth.login("staff")
    response = _upload(client, b"\x00\x01\x02binary", "bilde.png")
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "CSV" in html and "JSON" in html
    assert "/companies/import/confirm" not in html


def test_treasurers_may_not_import(app, client, auth):
    auth.login("treasurer")
    assert client.get("/companies/import").status_code == 403
    assert _upload(client, b"orgnr\n").status_code == 403


def test_upload_form_is_csrf_protected(app, client, auth):
    auth.login("staff")
    app.config["WTF_CSRF_ENABLED"] = True  # the `clean` fixture turns it off again
    response = _upload(client, f"orgnr,name\n{ORGNR_A},A AS\n".encode(), "x.csv")
    assert response.status_code == 400


def test_the_plan_is_made_once_for_previews_and_the_confirmation(app, client, auth, monkeypatch):
    from crm.members import importing

    auth.login("staff")
    with app.app_context():
        make_company("Sagstua Trelast AS", orgnr=ORGNR_A, employees=20)
    made = []
    real = importing.plan_bytes
    monkeypatch.setattr(importing, "plan_bytes", lambda *a, **k: made.append(1) or real(*a, **k))
    location = _upload(client, api_page(brreg_unit(ORGNR_A, "Sagstua Trelast AS"))).location
    first = client.get(location).get_data(as_text=True)
    client.get(location)  # the person looks again
    response = client.post(
        "/companies/import/confirm",
        data={"token": _hidden(first, "token"), "fingerprint": _hidden(first, "fingerprint")},
    )
    assert response.status_code == 302
    assert len(made) == 1
    with app.app_context():
        assert _company(ORGNR_A).employees == 42
