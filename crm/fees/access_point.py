"""Sending EHF documents through a Peppol access point, behind one small interface.

Like the mail backends (crm/mail/backends.py), one class per access point, chosen by the
setting `EHF_BACKEND`:

- `none` (default): no access point; nobody is reachable by EHF, invoices go by email.
- `local`: a test double that writes each document to `EHF_OUTBOX_DIR` and treats the
  organisation numbers in `EHF_LOCAL_RECEIVERS` (comma-separated, or `*` for all) as
  registered in Peppol.
- `http`: a generic HTTP access point API (most Norwegian providers offer one of this
  shape): `GET {EHF_ACCESS_POINT_URL}/participants/0192:{orgnr}` answers 200 when the
  company can receive EHF and 404 when it cannot; `POST {EHF_ACCESS_POINT_URL}/documents`
  takes the UBL XML (`Content-Type: application/xml`) with the headers `X-Peppol-Sender`,
  `X-Peppol-Receiver` (`0192:<orgnr>`), `X-Document-Type` (`invoice` or `credit-note`) and
  `Idempotency-Key`, authenticated by `Authorization: Bearer {EHF_ACCESS_POINT_API_KEY}`,
  and answers 2xx with JSON `{"id": "<message id>"}` (or a `Location` header).
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from crm.fees.ehf import ORGNR_SCHEME


class AccessPointError(Exception):
    """The access point could not be asked or refused the document (message for people)."""


def participant(orgnr: str) -> str:
    """The Peppol participant identifier of a Norwegian organisation number."""
    return f"{ORGNR_SCHEME}:{orgnr}"


class AccessPoint:
    """The interface: who can receive EHF, and sending one document."""

    name = ""

    def __init__(self, config: dict):
        self.config = config

    def can_receive(self, orgnr: str) -> bool:
        """Whether the company is registered to receive EHF invoices."""
        raise NotImplementedError

    def send(
        self, document: bytes, *, sender: str, receiver: str, kind: str, reference: str
    ) -> str:
        """Send one EHF document; returns the access point's message id.

        `kind` is "invoice" or "credit-note"; `reference` is our idempotency key, so a
        retried sending is not delivered twice by access points that honour it.
        """
        raise NotImplementedError


class NoAccessPoint(AccessPoint):
    name = "none"

    def can_receive(self, orgnr: str) -> bool:
        return False

    def send(self, document, *, sender, receiver, kind, reference) -> str:
        raise AccessPointError("No EHF access point is configured (EHF_BACKEND).")


class LocalAccessPoint(AccessPoint):
    """Test double: documents land as files; the receivers are a setting."""

    name = "local"

    def _receivers(self) -> set[str]:
        return {
            item.strip()
            for item in str(self.config.get("EHF_LOCAL_RECEIVERS") or "").split(",")
            if item.strip()
        }

    def can_receive(self, orgnr: str) -> bool:
        receivers = self._receivers()
        return bool(orgnr) and ("*" in receivers or orgnr in receivers)

    def send(self, document, *, sender, receiver, kind, reference) -> str:
        if not self.can_receive(receiver.removeprefix(f"{ORGNR_SCHEME}:")):
            raise AccessPointError(f"{receiver} is not registered for EHF.")
        folder = Path(self.config["EHF_OUTBOX_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in reference)
        partial = folder / f".{safe}.tmp"
        partial.write_bytes(document)
        os.replace(partial, folder / f"{safe}.xml")
        return f"local-{safe}"


class HttpAccessPoint(AccessPoint):
    """A generic JSON/XML-over-HTTPS access point API (see the module docstring)."""

    name = "http"

    def __init__(self, config: dict):
        super().__init__(config)
        self.base_url = str(config.get("EHF_ACCESS_POINT_URL") or "").rstrip("/")
        self.api_key = str(config.get("EHF_ACCESS_POINT_API_KEY") or "")
        self.timeout = float(config.get("EHF_ACCESS_POINT_TIMEOUT_SECONDS") or 20)
        if not self.base_url.startswith(("http://", "https://")):
            raise AccessPointError("EHF_ACCESS_POINT_URL is not set to an http(s) URL.")

    def _request(self, method: str, path: str, body: bytes | None = None, headers=None):
        request = urllib.request.Request(
            self.base_url + path,
            data=body,
            method=method,
            headers={"Authorization": f"Bearer {self.api_key}", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers or {}), exc.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise AccessPointError(f"The EHF access point did not answer: {exc}") from exc

    def can_receive(self, orgnr: str) -> bool:
        if not orgnr:
            return False
        path = "/participants/" + urllib.parse.quote(participant(orgnr), safe="")
        status, _headers, _body = self._request("GET", path)
        if status == 404:
            return False
        if 200 <= status < 300:
            return True
        raise AccessPointError(f"The EHF access point's lookup answered {status}.")

    def send(self, document, *, sender, receiver, kind, reference) -> str:
        status, headers, body = self._request(
            "POST",
            "/documents",
            body=document,
            headers={
                "Content-Type": "application/xml",
                "X-Peppol-Sender": sender,
                "X-Peppol-Receiver": receiver,
                "X-Document-Type": kind,
                "Idempotency-Key": reference,
            },
        )
        if not 200 <= status < 300:
            text = body.decode("utf-8", "replace")[:300]
            raise AccessPointError(f"The EHF access point refused the document ({status}): {text}")
        try:
            message_id = str(json.loads(body or b"{}").get("id") or "")
        except (ValueError, AttributeError):
            message_id = ""
        return message_id or headers.get("Location", "") or reference


BACKENDS: dict[str, type[AccessPoint]] = {
    NoAccessPoint.name: NoAccessPoint,
    LocalAccessPoint.name: LocalAccessPoint,
    HttpAccessPoint.name: HttpAccessPoint,
}


def get_access_point(config: dict) -> AccessPoint:
    """The access point EHF_BACKEND names, built from the app's config."""
    name = config.get("EHF_BACKEND") or "none"
    try:
        return BACKENDS[name](config)
    except KeyError:
        raise AccessPointError(f"Unknown EHF_BACKEND {name!r}.") from None
