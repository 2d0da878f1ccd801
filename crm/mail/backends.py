"""Mail backends: one class per way of getting mail out, chosen by MAIL_BACKEND.

A backend takes an `OutgoingMail` (one content, up to 1,000 recipients each with their
own headers and substitutions) and either returns the provider's message id or raises:

- `TransientSendError`: try again later (429, 5xx, timeouts, refused connections);
  `retry_after` says when, if the provider told us.
- `PermanentSendError`: retrying the same request cannot help (400: the provider's
  error text is the message); `ConfigurationError` when our settings are wrong (401/403).
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import functools
import http.client
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address as MimeAddress
from email.message import EmailMessage as MimeMessage
from pathlib import Path
from urllib.error import URLError

from crm.numbers import is_digits
from crm.timeutil import utcnow

MAX_RECIPIENTS_PER_REQUEST = 1000
# Headers the caller may not set: we own them, or SendGrid refuses to let them be set.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Reply-To",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Received",
        "DKIM-Signature",
        "X-SG-ID",
        "X-SG-EID",
        "X-Klynge-Message-Id",
    )
)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,75}$")
# Any line break or other control character (tab is allowed inside header values).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u2028\u2029\x85]")


class MailError(Exception):
    """Base of every error a backend raises."""


class HeaderInjectionError(MailError, ValueError):
    """A header name or value that could break out of its header line."""


class PermanentSendError(MailError):
    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class ConfigurationError(PermanentSendError):
    """Our side is wrong (missing or rejected API key, unknown backend)."""


class TransientSendError(MailError):
    def __init__(
        self, message: str, status_code: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


def check_header(name: str, value: str) -> None:
    """Refuse header names that are not tokens and values with CR, LF or other controls.

    Also when they are hidden in RFC 2047 encoded-words (`=?utf-8?q?=0D=0A…?=`): Python's
    email package decodes those when a header is set and writes the decoded line break
    out raw, which would let a value start a header of its own.
    """
    if not isinstance(name, str) or not _valid_header_name(name):
        raise HeaderInjectionError(f"invalid header name {name!r}")
    if not isinstance(value, str) or _CONTROL.search(value):
        raise HeaderInjectionError(f"header {name} contains a line break or control character")
    if "=?" in value and _CONTROL.search(_decoded(value)):
        raise HeaderInjectionError(f"header {name} hides a line break in an encoded word")


@functools.lru_cache(maxsize=256)
def _valid_header_name(name: str) -> bool:
    # Cached: a newsletter batch checks the same few names 1,000 times over.
    return bool(_HEADER_NAME.match(name))


def _decoded(value: str) -> str:
    """The value as the email package will read it (encoded-words decoded)."""
    try:
        return str(email.policy.SMTP.header_factory("X-Check", value))
    except Exception:  # noqa: BLE001 - unparseable: treat as hostile
        return "\n"


def check_custom_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        check_header(name, value)
        if name.lower() in RESERVED_HEADERS:
            raise HeaderInjectionError(f"header {name} is set by the mail system")


@dataclass(frozen=True)
class Address:
    email: str
    name: str = ""

    def __post_init__(self):
        check_header("To", self.email)
        check_header("To", self.name)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes


@dataclass
class Recipient:
    """One recipient of a batch: their own headers, substitutions and message id."""

    email: str
    name: str = ""
    # Our id for this recipient's copy: X-Klynge-Message-Id, custom_args, file name.
    message_id: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # Replaced in subject, text and HTML, like SendGrid substitution tags.
    substitutions: dict[str, str] = field(default_factory=dict)
    custom_args: dict[str, str] = field(default_factory=dict)
    subject: str | None = None

    def __post_init__(self):
        Address(self.email, self.name)  # validates
        check_custom_headers(self.headers)
        check_header("Subject", self.subject or "")
        if not all(isinstance(value, str) for value in self.custom_args.values()):
            raise ValueError("custom_args values must be strings (SendGrid refuses others)")


@dataclass
class OutgoingMail:
    """One content for up to 1,000 recipients: what a backend sends in one go."""

    sender: Address
    subject: str
    text: str
    recipients: list[Recipient]
    html: str | None = None
    categories: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    date: datetime = field(default_factory=utcnow)

    def validate(self) -> None:
        check_header("Subject", self.subject)
        if not self.recipients:
            raise ValueError("no recipients")
        if len(self.recipients) > MAX_RECIPIENTS_PER_REQUEST:
            raise ValueError(f"at most {MAX_RECIPIENTS_PER_REQUEST} recipients per request")
        seen = set()
        for recipient in self.recipients:
            address = recipient.email.lower()
            if address in seen:
                # SendGrid refuses the whole request when an address appears twice.
                raise ValueError(f"{recipient.email} appears twice in one request")
            seen.add(address)


def substitute(text: str | None, substitutions: dict[str, str]) -> str | None:
    """Replace substitution tags (`%first_name%` …) as SendGrid does, in one pass: a
    value that happens to contain a tag (a first name "%unsubscribe_url%") stays as is."""
    if text is None or not substitutions:
        return text
    tags = re.compile("|".join(re.escape(t) for t in sorted(substitutions, key=len, reverse=True)))
    return tags.sub(lambda match: substitutions[match.group(0)], text)


class MailBackend:
    """The interface: `send_batch(mail)` returns the provider's message id (or None).

    One call is one request to the provider, whatever the number of recipients (≤ 1,000).
    """

    name = "base"

    def __init__(self, config: dict):
        self.config = config

    def send_batch(self, mail: OutgoingMail) -> str | None:
        raise NotImplementedError


class OutboxBackend(MailBackend):
    """Writes one RFC 5322 .eml file per recipient under OUTBOX_DIR (development, tests)."""

    name = "outbox"

    def send_batch(self, mail: OutgoingMail) -> str | None:
        mail.validate()
        directory = Path(self.config["OUTBOX_DIR"])
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for recipient in mail.recipients:
                message = build_mime_message(mail, recipient)
                name = f"{mail.date:%Y%m%dT%H%M%S}-{recipient.message_id or id(recipient)}.eml"
                _write_atomically(directory / name, message.as_bytes(policy=email.policy.SMTP))
        except OSError as exc:
            raise TransientSendError(f"could not write to the outbox: {exc}") from exc
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    # A reader never sees half a file; a retry of the same message replaces it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# RFC 5322 address syntax: a display name holding these could be read as an address.
_ADDRESS_SYNTAX = re.compile(r'[<>@,;:"\\()\[\]\x00-\x1f\x7f\u2028\u2029\x85]')


def display_name(name: str | None) -> str:
    """A display name that can never become an address, in any backend.

    Python's email package loses the quotes around a long display name when it folds the
    header, so `Eve <attacker@evil.example>, Bcc: …` would turn into extra recipients;
    SendGrid builds the header from our name field its own way. Without angle brackets,
    `@`, commas, semicolons, colons, quotes and parentheses no parser can find an address
    in the name, however the line is folded. The rest of the name stays readable.
    """
    if name and is_tidy(name, 200) and not _ADDRESS_SYNTAX.search(name):
        return name  # what the line below would give back (a newsletter has 1,000)
    return " ".join(_ADDRESS_SYNTAX.sub(" ", name or "").split())[:200]


def is_tidy(text: str, limit: int) -> bool:
    """Whether `" ".join(text.split())[:limit] == text`, asked cheaply: printable text
    holds no whitespace but the plain space (Python counts every other kind, like
    no-break spaces and line breaks, as unprintable)."""
    return (
        len(text) <= limit
        and text.isprintable()
        and "  " not in text
        and text[0] != " "
        and text[-1] != " "
    )


def _mime_address(address: Address) -> MimeAddress:
    return MimeAddress(display_name=display_name(address.name), addr_spec=address.email)


def build_mime_message(mail: OutgoingMail, recipient: Recipient) -> MimeMessage:
    """The full RFC 5322 message one recipient gets (text + HTML alternative, attachments)."""
    subs = recipient.substitutions
    subject = substitute(recipient.subject or mail.subject, subs)
    check_header("Subject", subject)
    message = MimeMessage(policy=email.policy.SMTP)
    message["From"] = _mime_address(mail.sender)
    message["To"] = _mime_address(Address(recipient.email, recipient.name))
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(mail.date)
    domain = mail.sender.email.rpartition("@")[2] or "localhost"
    if recipient.message_id:
        message["Message-ID"] = f"<{recipient.message_id}@{domain}>"
        message["X-Klynge-Message-Id"] = recipient.message_id
    else:
        message["Message-ID"] = email.utils.make_msgid(domain=domain)
    for category in mail.categories:
        message["X-Klynge-Category"] = category
    for name, value in recipient.headers.items():
        check_header(name, value)
        message[name] = value
    message.set_content(substitute(mail.text, subs), subtype="plain", charset="utf-8")
    if mail.html is not None:
        message.add_alternative(substitute(mail.html, subs), subtype="html", charset="utf-8")
    for attachment in mail.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )
    return message


class SendGridBackend(MailBackend):
    """SendGrid's v3 mail/send through the official client: one request per batch."""

    name = "sendgrid"

    def __init__(self, config: dict):
        super().__init__(config)
        if not config.get("SENDGRID_API_KEY"):
            raise ConfigurationError("SENDGRID_API_KEY is not set")
        from sendgrid import SendGridAPIClient

        self.client = SendGridAPIClient(
            config["SENDGRID_API_KEY"], host=config.get("SENDGRID_API_HOST")
        )
        # The client has no timeout of its own: a stalled connection would hang the job.
        self.client.client.timeout = float(config["SENDGRID_TIMEOUT_SECONDS"])

    def build_request(self, mail: OutgoingMail) -> dict:
        """The JSON body of mail/send: one personalization per recipient, in order."""
        from sendgrid.helpers.mail import (
            Attachment as SgAttachment,
        )
        from sendgrid.helpers.mail import (
            Category,
            Content,
            CustomArg,
            Disposition,
            FileContent,
            FileName,
            FileType,
            From,
            Header,
            Mail,
            Personalization,
            Substitution,
            To,
        )

        mail.validate()
        message = Mail()
        message.from_email = From(mail.sender.email, display_name(mail.sender.name) or None)
        message.subject = mail.subject
        message.add_content(Content("text/plain", mail.text))
        if mail.html is not None:
            message.add_content(Content("text/html", mail.html))
        for recipient in mail.recipients:
            p = Personalization()
            p.add_to(To(recipient.email, display_name(recipient.name) or None))
            if recipient.subject:
                p.subject = recipient.subject
            headers = dict(recipient.headers)
            if recipient.message_id:
                headers["X-Klynge-Message-Id"] = recipient.message_id
            for name, value in headers.items():
                check_header(name, value)
                p.add_header(Header(name, value))
            for tag, value in recipient.substitutions.items():
                p.add_substitution(Substitution(tag, value))
            custom_args = dict(recipient.custom_args)
            if recipient.message_id:
                custom_args["klynge_message_id"] = recipient.message_id
            for key, value in custom_args.items():
                p.add_custom_arg(CustomArg(key, str(value)))
            # index=0 (the default) would insert at the front and reverse the order.
            message.add_personalization(p, index=len(message.personalizations))
        for category in mail.categories:
            message.add_category(Category(category))
        for attachment in mail.attachments:
            message.add_attachment(
                SgAttachment(
                    FileContent(base64.b64encode(attachment.content).decode("ascii")),
                    FileName(attachment.filename),
                    FileType(attachment.content_type),
                    Disposition("attachment"),
                )
            )
        return message.get()

    def send_batch(self, mail: OutgoingMail) -> str | None:
        from python_http_client import exceptions as http_errors

        body = self.build_request(mail)
        try:
            response = self.client.send(body)
        except http_errors.HTTPError as exc:
            raise _classify_http_error(exc) from exc
        except (URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            # A timeout may come after SendGrid accepted the request: a retry can then
            # send twice (mail/send has no idempotency key). Rare, and better than losing it.
            reason = getattr(exc, "reason", None) or exc
            raise TransientSendError(f"SendGrid not reachable: {reason}") from exc
        except OSError as exc:
            raise TransientSendError(f"SendGrid not reachable: {exc}") from exc
        if response.status_code not in (200, 202):
            raise TransientSendError(
                f"unexpected answer {response.status_code} from SendGrid",
                status_code=response.status_code,
            )
        return response.headers.get("X-Message-Id")


def sendgrid_error_text(body: bytes | str | None) -> str:
    """SendGrid's `{"errors": [{"message", "field"}]}` as one readable line."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        errors = json.loads(body or "")["errors"]
        parts = []
        for error in errors:
            text = str(error.get("message") or "").strip()
            if error.get("field"):
                text = f"{text} (field: {error['field']})"
            parts.append(text)
        if parts:
            return "; ".join(parts)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return (body or "").strip()[:2000]


def retry_after_seconds(headers, now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) or `X-RateLimit-Reset`."""
    if headers is None:
        return None
    now = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        if is_digits(value):
            return float(value)
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError, IndexError):
            pass
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            pass
    return None


def _classify_http_error(exc) -> MailError:
    return classify_answer(exc.status_code, exc.body, exc.headers)


def classify_answer(status: int, body: bytes | str | None, headers) -> MailError:
    """The error an answer other than 2xx from SendGrid means (see the module's doc)."""
    text = sendgrid_error_text(body)
    if status == 429:
        return TransientSendError(
            f"SendGrid rate limit (429): {text}",
            status_code=status,
            retry_after=retry_after_seconds(headers),
        )
    if status in (401, 403):
        return ConfigurationError(
            f"SendGrid refused our API key ({status}): {text}. Check SENDGRID_API_KEY.",
            status_code=status,
        )
    if status >= 500 or status == 408:
        return TransientSendError(f"SendGrid error {status}: {text}", status_code=status)
    return PermanentSendError(text or f"SendGrid refused the message ({status})", status)


BACKENDS: dict[str, type[MailBackend]] = {
    OutboxBackend.name: OutboxBackend,
    SendGridBackend.name: SendGridBackend,
}


def get_backend(config: dict) -> MailBackend:
    """The backend MAIL_BACKEND names, built from the app's config."""
    name = config.get("MAIL_BACKEND") or "outbox"
    try:
        backend_class = BACKENDS[name]
    except KeyError:
        raise ConfigurationError(f"unknown MAIL_BACKEND {name!r}") from None
    return backend_class(config)
