"""Backends in-process: SendGrid request shape and limits, outbox files, header safety."""

import email
import email.policy
import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crm.mail.backends import (
    Address,
    HeaderInjectionError,
    OutboxBackend,
    OutgoingMail,
    PermanentSendError,
    Recipient,
    SendGridBackend,
    retry_after_seconds,
    sendgrid_error_text,
)

pytest_plugins = ["tests.sendgrid_server"]

SENDER = Address("post@example.no", "Klynge")


def newsletter(recipients: list[Recipient], **fields) -> OutgoingMail:
    fields.setdefault("subject", "Nytt fra klyngen")
    fields.setdefault("text", "Hei!\n\nAvmeld: -unsubscribe-")
    fields.setdefault("html", '<p>Hei!</p><a href="-unsubscribe-">Avmeld</a>')
    return OutgoingMail(sender=SENDER, recipients=recipients, categories=["newsletter"], **fields)


def recipients(count: int) -> list[Recipient]:
    return [
        Recipient(
            email=f"person{i}@example.no",
            name=f"Person {i}",
            message_id=f"m-{i}",
            headers={"List-Unsubscribe": f"<http://127.0.0.1:5000/unsubscribe/t{i}>"},
            substitutions={"-unsubscribe-": f"http://127.0.0.1:5000/unsubscribe/t{i}"},
        )
        for i in range(count)
    ]


def sendgrid(server) -> SendGridBackend:
    return SendGridBackend(
        {
            "SENDGRID_API_KEY": server.api_key,
            "SENDGRID_API_HOST": server.url,
            "SENDGRID_TIMEOUT_SECONDS": 10,
        }
    )


def test_a_batch_of_1000_recipients_is_one_request_in_order(sendgrid_server):
    provider_id = sendgrid(sendgrid_server).send_batch(newsletter(recipients(1000)))

    assert len(sendgrid_server.requests) == 1
    request = sendgrid_server.requests[0]
    assert provider_id == request.message_id
    personalizations = request.body["personalizations"]
    assert len(personalizations) == 1000
    assert [p["to"][0]["email"] for p in personalizations] == [
        f"person{i}@example.no" for i in range(1000)
    ]
    last = personalizations[-1]
    assert last["custom_args"] == {"klynge_message_id": "m-999"}
    assert last["headers"]["List-Unsubscribe"] == "<http://127.0.0.1:5000/unsubscribe/t999>"
    assert last["headers"]["X-Klynge-Message-Id"] == "m-999"
    assert last["substitutions"] == {"-unsubscribe-": "http://127.0.0.1:5000/unsubscribe/t999"}
    assert request.body["categories"] == ["newsletter"]
    assert request.headers["Authorization"] == "Bearer test-key"


def test_more_than_1000_recipients_or_a_repeated_address_is_refused_before_sending(
    sendgrid_server,
):
    backend = sendgrid(sendgrid_server)
    with pytest.raises(ValueError, match="1000"):
        backend.send_batch(newsletter(recipients(1001)))
    twice = recipients(2) + [Recipient(email="PERSON0@example.no", message_id="x")]
    with pytest.raises(ValueError, match="twice"):
        backend.send_batch(newsletter(twice))
    assert sendgrid_server.requests == [] and sendgrid_server.refused == []


def test_the_api_refuses_oversized_custom_args_and_the_error_text_is_kept(sendgrid_server):
    big = Recipient(email="kari@example.no", custom_args={"blob": "x" * 10_000})
    with pytest.raises(PermanentSendError) as raised:
        sendgrid(sendgrid_server).send_batch(newsletter([big]))
    assert raised.value.status_code == 400
    assert "exceed 10,000 bytes" in str(raised.value)
    assert "personalizations.0.custom_args" in str(raised.value)


def post_json(server, body, key="test-key"):
    request = urllib.request.Request(
        f"{server.url}/v3/mail/send",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read() or b"null")


def test_the_test_server_checks_key_schema_and_addresses_like_the_api(sendgrid_server):
    valid = {
        "personalizations": [{"to": [{"email": "kari@example.no"}]}],
        "from": {"email": "post@example.no"},
        "subject": "Hei",
        "content": [{"type": "text/plain", "value": "Hei"}],
    }
    status, headers, _ = post_json(sendgrid_server, valid)
    assert status == 202 and headers["X-Message-Id"]
    assert post_json(sendgrid_server, valid, key="nope")[0] == 401
    no_from = {k: v for k, v in valid.items() if k != "from"}
    status, _, body = post_json(sendgrid_server, no_from)
    assert status == 400 and "from" in body["errors"][0]["message"]
    bad_address = dict(valid, personalizations=[{"to": [{"email": "not-an-address"}]}])
    assert post_json(sendgrid_server, bad_address)[0] == 400
    repeated = dict(
        valid,
        personalizations=[
            {"to": [{"email": "kari@example.no"}]},
            {"to": [{"email": "Kari@Example.no"}]},
        ],
    )
    status, _, body = post_json(sendgrid_server, repeated)
    assert status == 400 and body["errors"][0]["field"] == "personalizations.1.to.0.email"
    too_many = dict(
        valid,
        personalizations=[{"to": [{"email": f"p{i}@example.no"}]} for i in range(1001)],
    )
    assert post_json(sendgrid_server, too_many)[0] == 400
    assert len(sendgrid_server.requests) == 1


def test_outbox_writes_one_file_per_recipient_with_their_own_link(tmp_path: Path):
    date = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    OutboxBackend({"OUTBOX_DIR": str(tmp_path)}).send_batch(newsletter(recipients(3), date=date))
    files = sorted(tmp_path.glob("*.eml"))
    assert [f.name for f in files] == [f"20261123T120000-m-{i}.eml" for i in range(3)]
    parsed = email.message_from_bytes(files[2].read_bytes(), policy=email.policy.default)
    assert parsed["To"] == "Person 2 <person2@example.no>"
    assert parsed["Date"] == "Mon, 23 Nov 2026 12:00:00 +0000"
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    assert "http://127.0.0.1:5000/unsubscribe/t2" in text and "-unsubscribe-" not in text


def test_norwegian_names_and_subjects_are_encoded_not_mangled(tmp_path: Path):
    mail = newsletter(
        [Recipient(email="ase@example.no", name="Åse Øvrebø, Blåbær AS", message_id="n1")],
        subject="Velkommen til Kongsvinger-klyngen – æøå",
    )
    OutboxBackend({"OUTBOX_DIR": str(tmp_path)}).send_batch(mail)
    raw = next(tmp_path.glob("*.eml")).read_bytes()
    assert raw.isascii()  # every header encoded for SMTP
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    # The comma goes (no address syntax in display names: crm.mail.backends.display_name).
    assert parsed["To"].addresses[0].display_name == "Åse Øvrebø Blåbær AS"
    assert parsed["Subject"] == "Velkommen til Kongsvinger-klyngen – æøå"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Recipient(email="kari@example.no\r\nBcc: evil@example.no"),
        lambda: Recipient(email="kari@example.no", name="Kari\nBcc: evil@example.no"),
        lambda: Recipient(email="kari@example.no", headers={"X-Note": "a\r\nBcc: evil@x.no"}),
        lambda: Recipient(email="kari@example.no", headers={"Bcc": "evil@example.no"}),
        lambda: Recipient(email="kari@example.no", headers={"X-Bad Name": "v"}),
        lambda: newsletter(
            [Recipient(email="k@example.no")], subject="Hei\nBcc: e@x.no"
        ).validate(),
    ],
)
def test_line_breaks_or_reserved_names_in_headers_are_refused(build):
    with pytest.raises(HeaderInjectionError):
        build()


def test_retry_after_comes_from_retry_after_or_the_rate_limit_reset():
    assert retry_after_seconds({"Retry-After": "7"}, now=0) == 7
    assert retry_after_seconds({"X-RateLimit-Reset": "1000"}, now=990) == 10
    assert retry_after_seconds({"X-RateLimit-Reset": "900"}, now=990) == 0
    assert retry_after_seconds({"Retry-After": "soon"}, now=0) is None
    assert retry_after_seconds({}, now=0) is None


def test_sendgrid_error_text_is_readable():
    body = b'{"errors":[{"message":"Invalid type.","field":"personalizations.0.to"}]}'
    assert sendgrid_error_text(body) == "Invalid type. (field: personalizations.0.to)"
    assert sendgrid_error_text(b"<html>oops</html>") == "<html>oops</html>"


def test_substitution_tags_are_replaced_once_so_a_value_holding_a_tag_stays_as_written():
    from crm.mail.backends import substitute

    tags = {"%first_name%": "%unsubscribe_url%", "%unsubscribe_url%": "https://example.no/u/1"}
    text = "Hei %first_name%! Avmeld: %unsubscribe_url%"
    assert substitute(text, tags) == "Hei %unsubscribe_url%! Avmeld: https://example.no/u/1"
    assert substitute(text, {}) == text
    assert substitute(None, tags) is None
