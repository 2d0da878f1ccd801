"""The sending pipeline's tunables: app config, else the environment, else a default.

Only NEWSLETTER_RATE_PER_MINUTE is a documented setting (crm/config.py); the others
are for operations and tests (a test shortens leases and grace periods to seconds).
"""

import os

from flask import current_app

DEFAULTS = {
    # Emails per minute over all workers (a Redis token bucket shared by them).
    "NEWSLETTER_RATE_PER_MINUTE": 30000,
    # Recipients per provider request (SendGrid takes at most 1,000 personalizations).
    "NEWSLETTER_BATCH_SIZE": 1000,
    # How long a claimed batch stays with its sender without being renewed. Must be
    # well above the request timeout plus the longest inline wait.
    "NEWSLETTER_LEASE_SECONDS": 120.0,
    # After a 5xx, a timeout or a crash mid-request, wait this long for the webhook's
    # events before deciding that the batch did not go out (README: resend policy).
    "NEWSLETTER_AMBIGUOUS_GRACE_SECONDS": 300.0,
    # Backoff for failed attempts: base * 2^(attempt-1), capped.
    "NEWSLETTER_RETRY_BASE_SECONDS": 10.0,
    "NEWSLETTER_RETRY_MAX_SECONDS": 900.0,
    # Attempts before a batch's remaining recipients are marked failed.
    "NEWSLETTER_MAX_ATTEMPTS": 12,
    # Waits up to this long happen inside the job; longer ones reschedule it.
    "NEWSLETTER_MAX_INLINE_WAIT_SECONDS": 15.0,
    # How often the reconciler looks for batches whose job or sender was lost.
    "NEWSLETTER_RECONCILE_SECONDS": 60.0,
}


def setting(name: str):
    default = DEFAULTS[name]
    value = current_app.config.get(name)
    if value is None or value == "":
        value = os.environ.get(name)
    if value is None or value == "":
        return default
    return type(default)(value)


def batch_size() -> int:
    return max(1, min(1000, setting("NEWSLETTER_BATCH_SIZE")))
