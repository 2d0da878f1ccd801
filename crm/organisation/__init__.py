"""The organisation behind Klynge: its name, logo, sender, privacy policy and footer.

One settings page (admin) feeds every place the organisation shows: staff and public
pages, emails and invoices. `crm.organisation.get()` is the one accessor.
"""

from crm.organisation.services import get

__all__ = ["get"]
