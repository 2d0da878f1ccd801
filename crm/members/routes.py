"""Staff pages for companies, contacts and networks."""

from flask import Blueprint, render_template

from crm.auth.permissions import permission_required
from crm.extensions import db
from crm.members.models import Company

bp = Blueprint("members", __name__)


@bp.route("/companies")
@permission_required("members.view")
def company_list():
    companies = db.session.scalars(db.select(Company).order_by(Company.name).limit(50)).all()
    return render_template("members/company_list.html", companies=companies)


def init_app(app) -> None:
    app.register_blueprint(bp)
