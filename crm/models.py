"""Every model module, imported in one place so metadata (and Alembic) knows every table."""

import crm.audit  # noqa: F401
import crm.auth.models  # noqa: F401
import crm.cache  # noqa: F401
import crm.events.models  # noqa: F401
import crm.fees.models  # noqa: F401
import crm.followups.models  # noqa: F401
import crm.mail.models  # noqa: F401
import crm.members.models  # noqa: F401
import crm.members.search  # noqa: F401  (registers the search-term listener)
import crm.newsletters.models  # noqa: F401
import crm.organisation.models  # noqa: F401
import crm.subscriptions.models  # noqa: F401

# The rows each process keeps a copy of (crm/cache.py): a change to any makes a new stamp.
crm.cache.watch(
    crm.organisation.models.Organisation,
    crm.members.models.Network,
    crm.subscriptions.models.Topic,
    crm.subscriptions.models.ConsentWording,
)
