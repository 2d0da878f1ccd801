"""The mail backend newsletters send batches with.

For SendGrid it is the mail area's `SendGridBackend` (its request, errors and answers),
with three changes, because CPU is what limits throughput on a small machine:

- the request body is built from plain dicts instead of the official helper classes,
  which cost ~0.1 ms per recipient — a fifth of a 1,000-recipient batch's CPU time.
  The body is the same JSON (tests/test_newsletters_sending.py compares the two);
- it is encoded with orjson (0.2 ms for a 1,000-recipient body; json.dumps took 6 ms,
  a tenth of a batch's CPU time). The same JSON, non-ASCII as UTF-8 instead of \\u escapes;
- it is posted with http.client, one connection per request as the official client
  does, with the client's own headers. The official client (python_http_client)
  formats the whole 1 MB body into a debug message on every request, logged or not:
  ~7 ms per batch. Its errors are classified by the same rules (`classify_answer`).
"""

import http.client
import ssl
from urllib.parse import urlsplit

import orjson

from crm.mail.backends import (
    OutgoingMail,
    SendGridBackend,
    TransientSendError,
    check_header,
    classify_answer,
    display_name,
    get_backend,
)


def _address(email: str, name: str) -> dict:
    return {"name": name, "email": email} if name else {"email": email}


class BatchSendGridBackend(SendGridBackend):
    def build_request(self, mail: OutgoingMail) -> dict:
        if mail.attachments:
            return super().build_request(mail)
        mail.validate()
        personalizations = []
        for recipient in mail.recipients:
            # The recipient's own dicts are used as they are: built for this request.
            p: dict = {"to": [_address(recipient.email, display_name(recipient.name))]}
            if recipient.subject:
                p["subject"] = recipient.subject
            headers = recipient.headers
            custom_args = recipient.custom_args
            if recipient.message_id:
                check_header("X-Klynge-Message-Id", recipient.message_id)
                headers = {**headers, "X-Klynge-Message-Id": recipient.message_id}
                custom_args = {**custom_args, "klynge_message_id": recipient.message_id}
            if headers:
                p["headers"] = headers
            if recipient.substitutions:
                p["substitutions"] = recipient.substitutions
            if custom_args:
                p["custom_args"] = custom_args  # strings: checked by Recipient
            personalizations.append(p)
        content = [{"type": "text/plain", "value": mail.text}]
        if mail.html is not None:
            content.append({"type": "text/html", "value": mail.html})
        body = {
            "from": _address(mail.sender.email, display_name(mail.sender.name)),
            "subject": mail.subject,
            "personalizations": personalizations,
            "content": content,
        }
        if mail.categories:
            body["categories"] = list(mail.categories)
        return body

    def send_batch(self, mail: OutgoingMail) -> str | None:
        body = orjson.dumps(self.build_request(mail))
        client = self.client.client  # the official client's host, headers and timeout
        url = urlsplit(client.host)
        if url.scheme == "https":
            connection = http.client.HTTPSConnection(
                url.hostname, url.port, timeout=client.timeout, context=_tls()
            )
        else:
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=client.timeout)
        path = f"{url.path.rstrip('/')}/v3/mail/send"
        try:
            connection.request(
                "POST", path, body, {**client.request_headers, "Content-Type": "application/json"}
            )
            response = connection.getresponse()
            answer = response.read()
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            # A timeout may come after SendGrid accepted the request: the sender then
            # waits for the webhook's events before sending again (crm.newsletters.sending).
            raise TransientSendError(f"SendGrid not reachable: {exc}") from exc
        except OSError as exc:
            raise TransientSendError(f"SendGrid not reachable: {exc}") from exc
        finally:
            connection.close()
        if response.status >= 400:
            raise classify_answer(response.status, answer, response.headers)
        if response.status not in (200, 202):
            raise TransientSendError(
                f"unexpected answer {response.status} from SendGrid", status_code=response.status
            )
        return response.headers.get("X-Message-Id")


_TLS: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _TLS  # noqa: PLW0603 - one context per process: loading the CAs is slow
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


def newsletter_backend(config: dict):
    if (config.get("MAIL_BACKEND") or "outbox") == "sendgrid":
        return BatchSendGridBackend(config)
    return get_backend(config)
