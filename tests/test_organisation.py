"""One settings page for the organisation: its name, logo, sender, privacy policy and
footer show on staff and public pages and in emails."""

import io
import struct
import zlib

import pytest

from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.mail.services import queue_email
from crm.organisation import services
from crm.organisation.models import Organisation


def png(width: int = 4, height: int = 2) -> bytes:
    """A real, tiny PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


SETTINGS = {
    "name": "Kongsvingerregionen Industriklynge",
    "sender_name": "Industriklyngen",
    "sender_email": "post@industriklyngen.example.no",
    "privacy_url": "https://industriklyngen.example.no/personvern",
    "footer_text": "Gågata 1, 2211 Kongsvinger · tlf. 62 00 00 00",
}


def save(client, logo: bytes | None = None, **changes):
    data = dict(SETTINGS, **changes)
    if logo is not None:
        data["logo"] = (io.BytesIO(logo), "logo.png")
    return client.post("/admin/organisation", data=data, content_type="multipart/form-data")


def test_an_admin_sets_name_logo_sender_privacy_and_footer_used_everywhere(
    app, client, auth, quick_forms
):
    auth.login("admin")
    response = save(client, logo=png())
    assert response.status_code == 302
    with app.app_context():
        organisation = db.session.get(Organisation, 1)
        assert organisation.name == SETTINGS["name"]
        assert organisation.logo_content_type == "image/png"
        logo_url = f"/organisation/logo/{organisation.logo_filename}"

    # Staff pages: the name and the logo in the top bar and the title.
    page = client.get("/companies").get_data(as_text=True)
    assert f'src="{logo_url}"' in page and SETTINGS["name"] in page
    assert f"· {SETTINGS['name']}</title>" in page

    # The logo is served from our own host, typed and cached.
    logo = client.get(logo_url)
    assert logo.status_code == 200 and logo.data == png()
    assert logo.mimetype == "image/png"
    assert "immutable" in logo.headers["Cache-Control"]
    assert logo.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/organisation/logo/logo-0000.png").status_code == 404

    # The public signup form: logo, name, privacy link, footer.
    auth.logout()
    signup = client.get("/subscribe").get_data(as_text=True)
    assert f'src="{logo_url}"' in signup and SETTINGS["name"] in signup
    assert f'href="{SETTINGS["privacy_url"]}"' in signup
    assert "personvernerklæring" in signup.lower() and SETTINGS["footer_text"] in signup
    assert "Klynge</span>" not in signup

    # Emails: sender, name, logo (absolute, our host), footer, privacy link.
    with app.test_request_context():
        message = queue_email("kari@example.no", "mail/test", {"name": "Kari"})
        db.session.commit()
        message = db.session.get(EmailMessage, message.id)
        assert message.from_header == f"Industriklyngen <{SETTINGS['sender_email']}>"
        assert f"http://127.0.0.1:5000{logo_url}" in message.html_body
        assert f"Du får denne e-posten fra {SETTINGS['name']}." in message.text_body
        assert SETTINGS["footer_text"] in message.text_body + message.html_body
        assert SETTINGS["privacy_url"] in message.text_body


def test_without_settings_the_defaults_and_mail_from_apply(app, client, auth):
    with app.test_request_context():
        assert services.get().name == "Klynge"
        assert services.sender_header() == app.config["MAIL_FROM"]
        assert services.logo_url() is None
    signup = client.get("/subscribe").get_data(as_text=True)
    assert "Personvernerklæring" not in signup and "/organisation/logo/" not in signup


@pytest.mark.parametrize(
    "logo, message",
    [
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "PNG"),
        (b"GIF8" + b"x" * 10, "PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (600 * 1024), "for stor"),
    ],
)
def test_a_logo_that_is_not_a_small_image_is_refused_and_nothing_changes(
    app, client, auth, logo, message
):
    auth.login("admin")
    response = save(client, logo=logo, name="Nytt navn")
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Organisation, 1) is None or (
            db.session.get(Organisation, 1).name != "Nytt navn"
        )


def test_bad_sender_or_privacy_address_gets_a_message(app, client, auth):
    auth.login("admin")
    for field, bad in (
        ("sender_email", "not an address"),
        ("privacy_url", "javascript:alert(1)"),
        ("privacy_url", "//evil.example"),
        ("name", ""),
        ("name", "Eve\r\nBcc: x@example.no"),
    ):
        response = save(client, **{field: bad})
        assert response.status_code == 200, (field, bad)
        assert 'class="field-error"' in response.get_data(as_text=True), (field, bad)
    with app.app_context():
        assert db.session.get(Organisation, 1) is None


def test_a_new_logo_replaces_the_old_one_and_can_be_removed(app, client, auth):
    auth.login("admin")
    save(client, logo=png(4, 2))
    with app.app_context():
        first = db.session.get(Organisation, 1).logo_filename
    save(client, logo=png(8, 8))
    with app.app_context():
        second = db.session.get(Organisation, 1).logo_filename
    assert first != second
    assert client.get(f"/organisation/logo/{first}").status_code == 404
    assert client.get(f"/organisation/logo/{second}").status_code == 200
    save(client, remove_logo="y")
    with app.app_context():
        assert db.session.get(Organisation, 1).logo_filename == ""
        assert not list(services.logo_directory().glob("logo-*"))
    assert client.get(f"/organisation/logo/{second}").status_code == 404


def test_only_admins_reach_the_organisation_settings(app, client, auth):
    for role in ("staff", "treasurer"):
        auth.login(role)
        assert client.get("/admin/organisation").status_code == 403
        assert save(client).status_code == 403
        auth.logout()
    auth.login("admin")
    page = client.get("/admin/users").get_data(as_text=True)
    assert 'href="/admin/organisation"' in page


def test_the_public_pages_and_emails_say_industriklyngen(app, client):
    page = client.get("/subscribe").get_data(as_text=True)
    assert "næringsklyngen" not in page.lower()
    assert "industriklyngen" in page.lower()


@pytest.fixture
def quick_forms(app, monkeypatch):
    monkeypatch.setitem(app.config, "SUBSCRIBE_MIN_FILL_SECONDS", 0)


@pytest.fixture(autouse=True)
def no_logo_files(app):
    yield
    with app.app_context():
        for path in services.logo_directory().glob("logo-*"):
            path.unlink()


def test_the_invoice_sender_is_the_organisation_on_pdf_email_and_ehf(
    app, client, auth, artifacts_dir
):
    from crm.fees import ehf, pdf
    from crm.fees.services import get_settings, settings_problems
    from tests.factories import make_invoiced_members

    auth.login("admin")
    with app.test_request_context():
        invoice_id = make_invoiced_members(1)[0].id
        assert settings_problems(get_settings()) == []
    response = save(
        client,
        logo=png(120, 40),
        orgnr="974 760 673",
        street_address="Storgata 5",
        postal_code="2212",
        postal_place="Kongsvinger",
        email="faktura@industriklyngen.example.no",
    )
    assert response.status_code == 302
    with app.test_request_context():
        from crm.fees.models import Invoice

        invoice, settings = db.session.get(Invoice, invoice_id), get_settings()
        document = pdf.invoice_pdf(invoice, settings)
        xml = ehf.invoice_document(invoice, settings).decode("utf-8")
        assert f"<cbc:RegistrationName>{SETTINGS['name']}<" in xml
        assert "<cbc:StreetName>Storgata 5<" in xml and "974760673" in xml
        assert "<cbc:ElectronicMail>faktura@industriklyngen.example.no<" in xml
        assert b"/Subtype /Image" in document  # the logo in the header
        (artifacts_dir / "invoice-with-organisation-logo.pdf").write_bytes(document)
    # Without an organisation number, invoicing says where to fill it in.
    with app.test_request_context():
        services.for_update().orgnr = ""
        db.session.commit()
        assert any("organisasjonsnummer" in p.lower() for p in settings_problems(get_settings()))


def test_a_bad_orgnr_on_the_organisation_page_is_refused(app, client, auth):
    auth.login("admin")
    page = save(client, orgnr="974760674").get_data(as_text=True)
    assert "Ikke et gyldig organisasjonsnummer" in page


def test_the_fee_settings_page_shows_the_sender_and_links_to_the_organisation(app, client, auth):
    from tests.factories import make_fee_settings

    with app.test_request_context():
        make_fee_settings()
    auth.login("admin")
    page = client.get("/fees/settings").get_data(as_text=True)
    assert "Kongsvingerregionen Industriklynge" in page and "974760673" in page
    assert 'href="/admin/organisation"' in page
    assert 'name="cluster_name"' not in page and 'name="orgnr"' not in page
