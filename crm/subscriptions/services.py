"""How the subscriptions area joins the others: contact merges, the mail webhook, demo data.

The area's rules live in modules named after what they hold:
`ledger` (consent events and current states), `topics` (topics and consent wording),
`subscribers` (the contact behind an address), `signup` (public double opt-in),
`links` (unsubscribe and preferences links), `staff_consent` (consent recorded by staff),
`mail_events` (provider events that end consent) and `gdpr` (export and erasure).
"""

from sqlalchemy import select

from crm.extensions import db
from crm.members.models import Contact
from crm.subscriptions.ledger import rebuild_states
from crm.subscriptions.mail_events import handle_mail_event, handle_mail_events
from crm.subscriptions.models import ConsentEvent, ledger_rewrite_allowed
from crm.subscriptions.subscribers import subscriber_profile


def merge_consent(target: Contact, other: Contact) -> None:
    """MERGE_HOOKS: move the other contact's consent ledger to the target it joins.

    Both contacts' current states are re-derived from the ledger afterwards (in the
    order events were written, so the latest choice per topic wins). The other
    contact's links keep working: they resolve to the target through `merged_into_id`.
    """
    token = ledger_rewrite_allowed.set(True)
    try:
        events = db.session.scalars(select(ConsentEvent).where(ConsentEvent.contact_id == other.id))
        for event in events:
            event.contact_id = target.id
        db.session.flush()
    finally:
        ledger_rewrite_allowed.reset(token)
    rebuild_states(other.id)
    rebuild_states(target.id)
    other_profile = subscriber_profile(other)
    if other_profile is not None:
        profile = subscriber_profile(target, create=True)
        if not profile.company_name and other_profile.company_name:
            profile.company_name = other_profile.company_name
        # The person subscribed when the first of the two did: a profile made here is
        # not a new subscriber (the home page counts them by this date).
        profile.created_at = min(profile.created_at, other_profile.created_at)


def register_hooks() -> None:
    """Join the mail webhook, contact merges and demo data (each at most once)."""
    from crm.mail.services import register_event_handler
    from crm.members import services as members_services

    register_event_handler(handle_mail_event, batch=handle_mail_events)
    if merge_consent not in members_services.MERGE_HOOKS:
        members_services.MERGE_HOOKS.append(merge_consent)
    try:
        from crm.members import demo
    except ImportError:
        return
    from crm.subscriptions.demo import create_demo_subscribers

    hooks = getattr(demo, "DEMO_HOOKS", None)
    if hooks is not None and create_demo_subscribers not in hooks:
        hooks.append(create_demo_subscribers)
