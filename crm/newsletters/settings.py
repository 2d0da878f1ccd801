"""The sending pipeline's tunables, read from the app config.

Their defaults and environment parsing live with every other setting in crm/config.py
(README's settings table documents them); a test changes one with
`monkeypatch.setitem(app.config, …)`, e.g. to shorten leases and grace periods.
"""

from flask import current_app


def setting(name: str):
    """The NEWSLETTER_* tunable `name` from the app config."""
    return current_app.config[name]


def batch_size() -> int:
    """Recipients per request: the setting, at most SendGrid's 1,000, and at most one
    minute's worth of the rate limit (a request cannot be split across minutes)."""
    config = current_app.config
    return max(1, min(1000, config["NEWSLETTER_BATCH_SIZE"], config["NEWSLETTER_RATE_PER_MINUTE"]))
