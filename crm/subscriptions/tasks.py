"""RQ jobs of the subscriptions area."""

from crm.extensions import db
from crm.subscriptions import signup


def purge_expired_signups() -> int:
    """Delete pending signups whose confirmation link has expired."""
    purged = signup.purge_expired_signups()
    db.session.commit()
    return purged
