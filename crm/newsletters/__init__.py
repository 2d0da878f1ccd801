"""Newsletters: compose, audience, the recipient ledger, batched sending, statistics."""
