"""A SendGrid-compatible mail/send server on 127.0.0.1 for tests.

It checks requests the way the real v3 API does: the bearer key (401), the JSON body
against SendGrid's own schema (`tests/data/sendgrid-mail-v3.openapi.json`, the
`PostMailSend` request body), at most 1,000 personalizations and 1,000 recipients,
each address once per request, custom_args under 10,000 bytes, a subject and content.
Refusals are 400 with SendGrid's `{"errors": [{"message", "field"}]}`; accepted requests
get 202 with an `X-Message-Id` and are recorded.

Faults, each for the next N requests (in the order they were asked for):

- `fail_next` / `refuse_next` / `rate_limit_next`: answer 5xx / 400 / 429 *instead of*
  accepting: nothing is recorded, as when SendGrid refused or never took the request.
- `stall_next`: hold the request, then drop it unanswered (the client times out),
  nothing recorded.
- `accept_then_fail_next`: check and record the request as accepted (so the event feed
  sees it), then answer 5xx anyway: SendGrid took the mail, the client saw an error.
- `accept_then_stall_next`: check and record it as accepted, then hold it past the
  client's timeout and drop it unanswered: SendGrid took it, the client timed out.
- `delay_next`: hold the request, then check, record and answer it as usual (202): a
  slow SendGrid. If the client died meanwhile, it is still recorded: accepted, but the
  sender never saw the 202.

`requests` holds every accepted request (with `answer`: 202, the 5xx sent after
accepting, or None if dropped); `exchanges` every request to mail/send with its fault;
`faults_used` counts the faults by kind; `holding` lists the requests held right now.

Use the `sendgrid_server` fixture (add `pytest_plugins = ["tests.sendgrid_server"]` to a
test module) and pass `server.worker_env()` to `run_worker(extra_env=...)`.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_FILE = Path(__file__).parent / "data" / "sendgrid-mail-v3.openapi.json"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000
API_KEY = "test-key"


def _mail_send_validator() -> Draft202012Validator:
    document = json.loads(SCHEMA_FILE.read_text())
    uri = "urn:sendgrid:mail-v3"
    registry = Registry().with_resource(uri, Resource.from_contents(document, DRAFT202012))
    schema = {
        "$ref": f"{uri}#/components/requestBodies/PostMailSend/content/application~1json/schema"
    }
    return Draft202012Validator(
        schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


_VALIDATOR = _mail_send_validator()


class ApiError(Exception):
    def __init__(self, message: str, field_name: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field_name
        self.status = status


def check_mail_send(body: dict) -> None:
    """Raise ApiError for a body the real API would refuse with 400."""
    error = best_match(_VALIDATOR.iter_errors(body))
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path) or None
        raise ApiError(error.message, path)
    personalizations = body["personalizations"]
    if not personalizations:
        raise ApiError("The personalizations field is required.", "personalizations")
    seen: set[str] = set()
    total = 0
    top_args = body.get("custom_args") if isinstance(body.get("custom_args"), dict) else {}
    for i, p in enumerate(personalizations):
        if not p.get("to"):
            raise ApiError("The to array is required.", f"personalizations.{i}.to")
        for kind in ("to", "cc", "bcc"):
            for j, recipient in enumerate(p.get(kind) or []):
                total += 1
                address = recipient["email"].lower()
                if address in seen:
                    raise ApiError(
                        "Each email address in the personalization block should be unique "
                        "between to, cc, and bcc. We found the first duplicate instance of "
                        f"[{recipient['email']}] in the personalizations.{i}.{kind} field.",
                        f"personalizations.{i}.{kind}.{j}.email",
                    )
                seen.add(address)
        args = dict(top_args, **(p.get("custom_args") or {}))
        if len(json.dumps(args).encode()) >= MAX_CUSTOM_ARGS_BYTES:
            raise ApiError(
                "The custom arguments for this personalization exceed 10,000 bytes.",
                f"personalizations.{i}.custom_args",
            )
        if not body.get("subject") and not p.get("subject") and not body.get("template_id"):
            raise ApiError(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
            )
    if total > MAX_RECIPIENTS:
        raise ApiError(
            f"The total number of recipients must be no more than {MAX_RECIPIENTS}.",
            "personalizations",
        )
    if not body.get("content") and not body.get("template_id"):
        raise ApiError(
            "Unless a valid template_id is provided, the content parameter is required.",
            "content",
        )


# Fault kinds: answered before anything is recorded ("status", "stall"), or after the
# request was recorded as accepted ("accept_then_status", "accept_then_stall"), or a
# hold before the usual answer ("delay").
FAULT_KINDS = ("status", "stall", "accept_then_status", "accept_then_stall", "delay")


@dataclass
class Fault:
    kind: str  # one of FAULT_KINDS
    status: int = 500
    reset_in: float = 1.0
    retry_after: int | None = None
    seconds: float = 0.0
    message: str = "Internal server error"
    field: str | None = None


@dataclass
class ReceivedRequest:
    """A request the server accepted (recorded), whatever the client was answered."""

    body: dict
    headers: dict
    message_id: str
    at: float = field(default_factory=time.time)
    answer: int | None = 202  # None: accepted, then dropped unanswered
    fault: str = ""  # the fault kind it was accepted under, if any

    @property
    def recipients(self) -> list[str]:
        return [to["email"] for p in self.body["personalizations"] for to in p.get("to", [])]


@dataclass
class Exchange:
    """One authorized request to mail/send, as it went: its fault, its answer."""

    fault: str  # "" or one of FAULT_KINDS
    body: dict | None  # the parsed JSON body (None if it was not JSON)
    status: int | None = None  # what the client was answered; None: dropped (or held)
    accepted: bool = False
    at: float = field(default_factory=time.time)


@dataclass
class Held:
    """A request the server is holding right now (stall, accept-then-stall, delay)."""

    fault: str
    body: dict | None
    since: float = field(default_factory=time.time)


class SendGridServer:
    """The server and everything it saw. Thread-safe; started and stopped by the fixture."""

    def __init__(self, api_key: str = API_KEY):
        self.api_key = api_key
        self.requests: list[ReceivedRequest] = []  # accepted (202)
        self.refused: list[tuple[int, dict]] = []  # (status, error body)
        self.exchanges: list[Exchange] = []  # every authorized mail/send request
        self.holding: list[Held] = []  # requests held at this moment
        self.faults_used: Counter[str] = Counter()  # fault kind -> times used
        self.stalled = 0  # requests held and dropped unanswered (either stall kind)
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------

    def start(self) -> SendGridServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def reset(self) -> None:
        """Forget everything seen and every fault asked for (a server shared by tests:
        stopping one waits out `serve_forever`'s half-second poll)."""
        with self._lock:
            self.requests.clear()
            self.refused.clear()
            self.exchanges.clear()
            self.faults_used.clear()
            self.stalled = 0
            self._faults.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def worker_env(self, **extra: str) -> dict[str, str]:
        """Environment for a worker that sends through this server."""
        return {
            "MAIL_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": self.api_key,
            "SENDGRID_API_HOST": self.url,
            **extra,
        }

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        with self._lock:
            self._faults.extend(Fault("status", status=status) for _ in range(count))

    def refuse_next(
        self, count: int = 1, message: str = "Bad Request", field_name: str | None = None
    ) -> None:
        """Answer the next requests 400 with this error, as SendGrid does for a bad body."""
        with self._lock:
            self._faults.extend(
                Fault("status", status=400, message=message, field=field_name) for _ in range(count)
            )

    def rate_limit_next(
        self, count: int = 1, reset_in: float = 1.0, retry_after: int | None = None
    ) -> None:
        with self._lock:
            self._faults.extend(
                Fault("status", status=429, reset_in=reset_in, retry_after=retry_after)
                for _ in range(count)
            )

    def stall_next(self, count: int = 1, seconds: float = 3.0) -> None:
        """Hold the next requests this long, then drop them unanswered (not accepted)."""
        with self._lock:
            self._faults.extend(Fault("stall", seconds=seconds) for _ in range(count))

    def accept_then_fail_next(self, count: int = 1, status: int = 500) -> None:
        """Accept (check and record) the next requests, then answer them `status`."""
        with self._lock:
            self._faults.extend(Fault("accept_then_status", status=status) for _ in range(count))

    def accept_then_stall_next(self, count: int = 1, seconds: float = 3.0) -> None:
        """Accept the next requests, then hold them this long and drop them unanswered.
        Make `seconds` longer than the client's timeout."""
        with self._lock:
            self._faults.extend(Fault("accept_then_stall", seconds=seconds) for _ in range(count))

    def delay_next(self, count: int = 1, seconds: float = 2.0) -> None:
        """Hold the next requests this long, then check, record and answer them as usual
        (202). Recorded even if the client has gone meanwhile."""
        with self._lock:
            self._faults.extend(Fault("delay", seconds=seconds) for _ in range(count))

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def recipients(self) -> list[str]:
        with self._lock:
            return [r for request in self.requests for r in request.recipients]

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None


class _Handler(BaseHTTPRequestHandler):
    server_state: SendGridServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    def _reply(self, status: int, body: dict | None = None, headers: dict | None = None):
        data = json.dumps(body).encode() if body is not None else b""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client has gone (killed, timed out): nobody to answer
            self.close_connection = True

    def _refuse(self, status: int, message: str, field_name=None, headers=None):
        body = {"errors": [{"message": message, "field": field_name, "help": None}]}
        with self.server_state._lock:
            self.server_state.refused.append((status, body))
        self._reply(status, body, headers)

    def _hold(self, fault: Fault, body: dict | None) -> None:
        state = self.server_state
        held = Held(fault.kind, body)
        with state._lock:
            state.holding.append(held)
        try:
            time.sleep(fault.seconds)
        finally:
            with state._lock:
                state.holding.remove(held)

    def _stall(self, fault: Fault, body: dict | None) -> None:
        """Hold the request, then close the connection without an answer."""
        with self.server_state._lock:
            self.server_state.stalled += 1  # counted as the hold starts
        self._hold(fault, body)
        self.close_connection = True

    def do_POST(self):
        state = self.server_state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v3/mail/send":
            return self._refuse(404, "not found")
        if self.headers.get("Authorization") != f"Bearer {state.api_key}":
            return self._refuse(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        fault = state._next_fault()
        exchange = Exchange(fault.kind if fault else "", body if isinstance(body, dict) else None)
        with state._lock:
            state.exchanges.append(exchange)
            if fault:
                state.faults_used[fault.kind] += 1
        status = self._handle(fault, body, exchange)
        if status is not None:
            exchange.status = status

    def _handle(self, fault: Fault | None, body, exchange: Exchange) -> int | None:
        """Answer the request (or not); the status answered, None if dropped."""
        state = self.server_state
        if fault and fault.kind == "stall":
            self._stall(fault, exchange.body)
            return None
        if fault and fault.kind == "status" and fault.status == 429:
            headers = {
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time() + fault.reset_in)),
            }
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._refuse(429, "too many requests", headers=headers)
            return 429
        if fault and fault.kind == "status":
            self._refuse(fault.status, fault.message, fault.field)
            return fault.status
        if fault and fault.kind == "delay":
            self._hold(fault, exchange.body)
        if not isinstance(body, dict):
            self._refuse(400, "Bad Request", None)
            return 400
        try:
            check_mail_send(body)
        except ApiError as exc:
            self._refuse(exc.status, exc.message, exc.field)
            return exc.status
        # Accepted: recorded before any answer, whatever comes next.
        message_id = secrets.token_urlsafe(16)[:22]
        answer: int | None = 202
        if fault and fault.kind == "accept_then_status":
            answer = fault.status
        elif fault and fault.kind == "accept_then_stall":
            answer = None
        request = ReceivedRequest(
            body, dict(self.headers), message_id, answer=answer, fault=fault.kind if fault else ""
        )
        with state._lock:
            state.requests.append(request)
        exchange.accepted = True
        if fault and fault.kind == "accept_then_stall":
            self._stall(fault, body)
            return None
        if fault and fault.kind == "accept_then_status":
            body = {"errors": [{"message": fault.message, "field": fault.field, "help": None}]}
            self._reply(fault.status, body)  # no X-Message-Id: the client never learns it
            return fault.status
        self._reply(202, None, {"X-Message-Id": message_id})
        return 202

    def do_GET(self):
        self._refuse(405, "method not allowed")


@pytest.fixture
def sendgrid_server():
    server = SendGridServer().start()
    try:
        yield server
    finally:
        server.stop()
