"""The home page: staff see their day, admins that plus fees and system health;
treasurers land on the fee dashboard."""

from flask import Blueprint, render_template
from flask_login import current_user

from crm.auth.permissions import can, permission_required
from crm.followups.services import due_followups
from crm.home import services
from crm.timeutil import today_oslo

bp = Blueprint("home", __name__)


def landing_endpoint(user) -> str:
    """Where `user` lands after logging in (the front page sends them there)."""
    if can("home.view", user):
        return "home.overview"
    if can("fees.view", user):
        return "fees.dashboard"
    return "members.company_list"


@bp.route("/home")
@permission_required("home.view")
def overview():
    today = today_oslo()
    since = services.week_start(today)
    followups, followup_counts = due_followups(current_user, today)
    without_primary, without_primary_count = services.companies_without_primary_contact()
    mail_events, mail_event_count = services.mail_problems(since)
    context = {
        "today": today,
        "since": since,
        "followups": followups,
        "followup_counts": followup_counts,
        "upcoming": services.upcoming(today),
        "new_people": services.new_people(since),
        "mail_events": mail_events,
        "mail_event_count": mail_event_count,
        "without_primary": without_primary,
        "without_primary_count": without_primary_count,
        "home_panels": services.HOME_PANELS,
    }
    if can("fees.view"):
        from crm.fees.services import dashboard

        context["fees"] = dashboard(today.year)
    if can("users.manage"):
        context["health"] = services.system_health()
    return render_template("home/overview.html", **context)


def init_app(app) -> None:
    app.register_blueprint(bp)
