"""All models, imported in one place so metadata knows every table."""

from crm.audit import AuditEntry  # noqa: F401
from crm.auth.models import User  # noqa: F401
from crm.members import search  # noqa: F401  (registers the search-term listener)
from crm.members.models import Activity, Company, Contact, Network, SearchTerm  # noqa: F401
