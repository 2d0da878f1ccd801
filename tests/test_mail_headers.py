"""Hostile input (CR/LF, 10 kB values, unicode) never reaches an email header."""

import email
import email.policy
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2 import ChoiceLoader, DictLoader

from crm.extensions import db
from crm.mail.backends import MailError, SendGridBackend, build_mime_message
from crm.mail.services import outgoing_mail, queue_email

# The headers a message may have; anything else in the file is an injection.
ALLOWED = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "x-klynge-message-id",
    "x-klynge-category",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
}


@pytest.fixture
def echo_template(app):
    """A template whose subject and body repeat what they are given."""
    original = app.jinja_env.loader
    app.jinja_env.loader = ChoiceLoader(
        [
            DictLoader(
                {
                    "email/test/echo.subject.txt": "Hei {{ subject }}",
                    "email/test/echo.txt": "{{ body }}",
                    "email/test/echo.html": "<p>{{ body }}</p>",
                }
            ),
            original,
        ]
    )
    yield "test/echo"
    app.jinja_env.loader = original


PART_HEADERS = {"content-type", "content-transfer-encoding", "content-disposition", "mime-version"}

hostile = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "\r\nBcc: evil@example.no",
            "x\nSubject: hijack",
            "\rTo: evil@example.no",
            "a\x00b",
            "\u2028Bcc: evil@example.no",
            "=?utf-8?q?=0D=0ABcc:_evil@example.no?=",
            "Åse Øvrebø <evil@example.no>, other@example.no",
        ]
    ),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["a", "\n", "ø", "\r\n "]), st.integers(1, 10_000)
    ),
)


def header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0].lower() for line in head.split("\r\n") if line[:1] not in " \t"]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=hostile,
    subject=hostile,
    address=hostile | st.just("kari@example.no"),
    value=hostile,
    filename=hostile,
)
def test_hostile_values_never_reach_a_header(
    app, echo_template, name, subject, address, value, filename
):
    with app.test_request_context():
        try:
            message = queue_email(
                address,
                echo_template,
                {"subject": subject, "body": subject},
                to_name=name,
                headers={"List-Unsubscribe": value},
                attachments=[(filename, "application/pdf", b"%PDF")],
            )
        except MailError:
            db.session.rollback()
            return  # refused outright: fine
        try:
            mail = outgoing_mail(message)
            raw = build_mime_message(mail, mail.recipients[0]).as_bytes(policy=email.policy.SMTP)
            body = SendGridBackend.build_request(
                SendGridBackend.__new__(SendGridBackend), outgoing_mail(message)
            )
        finally:
            db.session.rollback()
    assert "\r" not in value and "\n" not in value  # such values must have been refused
    names = header_names(raw)
    assert set(names) <= ALLOWED, names
    assert names.count("to") == 1 and names.count("subject") == 1
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert len(parsed["To"].addresses) == 1
    assert "\n" not in str(parsed["Subject"]) and "\r" not in str(parsed["Subject"])
    for part in list(parsed.walk())[1:]:
        assert {k.lower() for k in part.keys()} <= PART_HEADERS, part.keys()
    attachment = next(parsed.iter_attachments())
    assert "\n" not in attachment.get_filename() and attachment.get_content() == b"%PDF"
    personalization = body["personalizations"][0]
    assert len(personalization["to"]) == 1
    assert all("\n" not in v and "\r" not in v for v in personalization["headers"].values())
    assert "\n" not in body["subject"] and "\n" not in personalization["to"][0].get("name", "")


FOLDED_INJECTION = (
    "Eve <attacker@evil.example>, Bcc: victim-list-" + "x" * 60 + "@evil.example " + "padding " * 10
)


@pytest.mark.parametrize(
    "name",
    [
        FOLDED_INJECTION,
        "Eve <attacker@evil.example>, Bcc: other@evil.example",
        '"Eve" <attacker@evil.example>; x@evil.example',
        "Nordmann, Kari (" + "lang " * 30 + ")",
    ],
)
def test_a_display_name_never_becomes_a_second_address_in_any_backend(
    app, echo_template, outbox, name
):
    """A signup name like `Eve <attacker@evil.example>, Bcc: …`, folded or not."""
    from crm.mail.backends import OutboxBackend

    with app.test_request_context():
        message = queue_email("kari@example.no", echo_template, {"subject": "x"}, to_name=name)
        mail = outgoing_mail(message)
        OutboxBackend(app.config).send_batch(mail)
        body = SendGridBackend.build_request(SendGridBackend.__new__(SendGridBackend), mail)
        db.session.rollback()
    [eml] = outbox.glob("*.eml")
    parsed = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["kari@example.no"]
    assert email.utils.getaddresses([str(parsed["To"])])[-1][1] == "kari@example.no"
    assert len(email.utils.getaddresses([str(parsed["To"])])) == 1
    [to] = body["personalizations"][0]["to"]
    assert to["email"] == "kari@example.no"
    # SendGrid writes the header from name and email: the name holds no address syntax.
    assert not set(to.get("name", "")) & set('<>@,;:"\\')
    header = f"{to.get('name', '')} <{to['email']}>"
    assert [addr for _, addr in email.utils.getaddresses([header])] == ["kari@example.no"]
    assert "Eve" in to.get("name", "") or "Nordmann" in to.get("name", "")


def test_the_sender_name_cannot_carry_an_address_either(app):
    from crm.mail.backends import Address, OutgoingMail, Recipient

    mail = OutgoingMail(
        sender=Address("post@example.no", FOLDED_INJECTION),
        subject="Hei",
        text="t",
        recipients=[Recipient("kari@example.no", "Kari")],
    )
    raw = build_mime_message(mail, mail.recipients[0]).as_bytes(policy=email.policy.SMTP)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert [a.addr_spec for a in parsed["From"].addresses] == ["post@example.no"]
    body = SendGridBackend.build_request(SendGridBackend.__new__(SendGridBackend), mail)
    assert not set(body["from"].get("name", "")) & set("<>@,;")


@settings(max_examples=2000, deadline=None)
@given(
    name=st.text(max_size=250)
    | st.text(alphabet=st.sampled_from(' aÅ\xa0\u2028\u3000\x85\t\r\n<@,"()'), max_size=30)
)
def test_names_are_tidied_for_headers_whatever_path_they_take(name):
    # display_name and header_safe give a tidy name back as it is (a batch has 1,000):
    # whichever way, single spaces, nothing that reads as an address or breaks a line.
    from crm.mail.backends import display_name
    from crm.subscriptions.subscribers import header_safe

    shown, safe = display_name(name), header_safe(name, 120)
    assert len(shown) <= 200 and len(safe) <= 120
    for tidied in (shown, safe):
        assert tidied == " ".join(tidied.split())  # no line breaks, tabs, odd spaces
        assert not any(unicodedata.category(c) == "Cc" and c < "\x80" for c in tidied)
    assert not set('<>@,;:"\\()[]') & set(shown)
    assert not any(c < " " or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029" for c in safe)
    words = " ".join(name.split())
    if words.isprintable() and not set('<>@,;:"\\()[]') & set(words):
        assert display_name(name) == words[:200]  # nothing else is taken away
        assert header_safe(name, 120) == words[:120]
