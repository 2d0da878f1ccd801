""" "Vi holder deg oppdatert": public newsletter signup with double opt-in, the consent
ledger, one-click unsubscribe, preferences, and GDPR export and erase."""
