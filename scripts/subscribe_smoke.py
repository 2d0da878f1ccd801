#!/usr/bin/env python3
"""Subscribe, confirm and unsubscribe through plain HTTP, like a person would.

    python scripts/subscribe_smoke.py http://127.0.0.1:5000 instance/outbox [--email ADDR]

Against a running `make run` (outbox mail backend): fetches the signup form, posts it
with the fields it found, waits for the confirmation email in the outbox directory,
opens the link (GET: a page with a button), presses the button (POST), waits for the
welcome email, checks its RFC 8058 headers, and unsubscribes with one POST to the
List-Unsubscribe URL. Python standard library only. Exit status 0 when every step
worked; otherwise a one-line reason.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import http.cookiejar
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

CONFIRM_LINK = re.compile(r"https?://[^\s\"'<>]+/subscribe/confirm/[A-Za-z0-9_.\-]+")


class Failure(Exception):
    pass


class FormParser(HTMLParser):
    """The forms of a page: action, method and the values a browser would submit."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._current = {
                "action": attrs.get("action", ""),
                "method": attrs.get("method", "get").lower(),
                "fields": [],
                "names": [],
            }
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None:
            name = attrs.get("name")
            if not name:
                return
            self._current["names"].append(name)
            kind = attrs.get("type", "text").lower()
            if kind in ("checkbox", "radio"):
                if "checked" in attrs:
                    self._current["fields"].append((name, attrs.get("value", "on")))
            elif kind not in ("submit", "button", "image", "file", "reset"):
                self._current["fields"].append((name, attrs.get("value", "")))
        elif tag == "button" and self._current is not None and attrs.get("name"):
            self._current.setdefault("buttons", []).append((attrs["name"], attrs.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[dict]:
    parser = FormParser()
    parser.feed(html)
    return parser.forms


def signup_form(html: str) -> dict:
    """The form on the page that has an email field."""
    for form in parse_forms(html):
        if "email" in form["names"]:
            return form
    raise Failure("no signup form with an email field on the page")


def fill_signup(form: dict, name: str, address: str) -> list[tuple[str, str]]:
    """The form's own fields (hidden tokens, pre-ticked topics) plus what a person types."""
    typed = {"name": name, "email": address, "company": "Røkt Smoke AS", "consent": "y"}
    fields = [(k, v) for k, v in form["fields"] if k not in typed]
    if not any(k == "topics" for k, _ in fields):
        fields.append(("topics", "generelt"))
    return fields + list(typed.items())


def read_outbox(directory: Path, recipient: str, since: float) -> list[email.message.EmailMessage]:
    messages = []
    for path in sorted(directory.glob("*.eml")):
        if path.stat().st_mtime < since - 1:
            continue
        with path.open("rb") as fh:
            message = email.message_from_binary_file(fh, policy=email.policy.default)
        if recipient.lower() in str(message.get("To", "")).lower():
            messages.append(message)
    return messages


def wait_for_email(directory: Path, recipient: str, since: float, matches, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in read_outbox(directory, recipient, since):
            if matches(message):
                return message
        time.sleep(0.25)
    raise Failure(f"no matching email to {recipient} in {directory} within {timeout:.0f} s")


def text_of(message: email.message.EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


class Browser:
    """urllib with a cookie jar; never follows redirects silently into errors."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def url(self, path_or_url: str) -> str:
        return urllib.parse.urljoin(self.base_url + "/", path_or_url)

    def request(self, method: str, url: str, data=None, headers=None) -> tuple[int, str]:
        body = None
        if data is not None:
            body = data if isinstance(data, bytes) else urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(self.url(url), data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    def get(self, url: str) -> tuple[int, str]:
        return self.request("GET", url)

    def post(self, url: str, data) -> tuple[int, str]:
        return self.request("POST", url, data)


def expect(condition: bool, reason: str) -> None:
    if not condition:
        raise Failure(reason)


def run(base_url: str, outbox: Path, address: str, timeout: float, min_fill: float) -> None:
    browser = Browser(base_url)
    since = time.time()

    status, html = browser.get("/subscribe")
    expect(status == 200, f"GET /subscribe answered {status}")
    form = signup_form(html)
    time.sleep(min_fill)  # the form refuses (silently) what is filled in inhumanly fast
    status, html = browser.post(
        form["action"] or "/subscribe", fill_signup(form, "Smoke Test", address)
    )
    expect(status == 200, f"POST /subscribe answered {status}")
    print(f"subscribed {address}")

    confirmation = wait_for_email(
        outbox, address, since, lambda m: CONFIRM_LINK.search(text_of(m)), timeout
    )
    link = CONFIRM_LINK.search(text_of(confirmation)).group(0)
    path = urllib.parse.urlsplit(link).path
    print(f"confirmation email: {confirmation['Subject']}")

    status, html = browser.get(path)
    expect(status == 200, f"GET {path} answered {status}")
    forms = [f for f in parse_forms(html) if f["method"] == "post"]
    expect(len(forms) == 1, "the confirmation page should show exactly one form (a button)")
    status, html = browser.post(forms[0]["action"] or path, forms[0]["fields"])
    expect(status == 200, f"POST {path} answered {status}")
    print("confirmed")

    welcome = wait_for_email(
        outbox, address, since, lambda m: m.get("List-Unsubscribe") is not None, timeout
    )
    list_unsubscribe = str(welcome["List-Unsubscribe"]).strip()
    one_click = str(welcome.get("List-Unsubscribe-Post", ""))
    expect(
        one_click == "List-Unsubscribe=One-Click",
        f"List-Unsubscribe-Post is {one_click!r}",
    )
    match = re.search(r"<(https?://[^>]+)>", list_unsubscribe)
    expect(match is not None, f"List-Unsubscribe has no https URL: {list_unsubscribe!r}")
    unsubscribe_path = urllib.parse.urlsplit(match.group(1)).path
    expect(unsubscribe_path.startswith("/unsubscribe/"), f"odd unsubscribe URL {match.group(1)}")
    print(f"welcome email: {welcome['Subject']}")
    print(f"List-Unsubscribe: {list_unsubscribe}")
    print(f"List-Unsubscribe-Post: {one_click}")

    # RFC 8058: what a mail provider sends; a fresh client, no cookies, no CSRF token.
    status, html = Browser(base_url).post(unsubscribe_path, b"List-Unsubscribe=One-Click")
    expect(status == 200, f"one-click POST {unsubscribe_path} answered {status}")
    status, html = browser.get(unsubscribe_path)
    expect(status == 200, f"GET {unsubscribe_path} answered {status}")
    print("unsubscribed with one POST")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:5000")
    parser.add_argument("outbox", type=Path, help="the outbox directory, e.g. instance/outbox")
    parser.add_argument("--email", default=None, help="address to subscribe")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait per email")
    parser.add_argument(
        "--min-fill", type=float, default=2.5, help="seconds between loading and sending the form"
    )
    args = parser.parse_args(argv)
    address = args.email or f"smoke-{int(time.time() * 1000)}@example.no"
    try:
        run(args.base_url, args.outbox, address, args.timeout, args.min_fill)
    except (Failure, OSError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
