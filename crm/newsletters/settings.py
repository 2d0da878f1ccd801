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
    return max(1, min(1000, current_app.config["NEWSLETTER_BATCH_SIZE"]))
