"""The organisation settings page (admin) and the logo it serves from instance/."""

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from flask_babel import gettext as _

from crm.audit import history_for
from crm.auth.permissions import permission_required
from crm.extensions import db
from crm.organisation import services
from crm.organisation.forms import OrganisationForm

bp = Blueprint("organisation", __name__)

FIELDS = (
    "name",
    "sender_name",
    "sender_email",
    "privacy_url",
    "footer_text",
    "orgnr",
    "street_address",
    "postal_code",
    "postal_place",
    "email",
)


@bp.route("/admin/organisation", methods=["GET", "POST"])
@permission_required("users.manage")
def settings():
    current = services.get()
    form = OrganisationForm(obj=current if request.method == "GET" else None)
    if form.validate_on_submit():
        organisation = services.for_update()
        try:
            upload = request.files.get("logo")
            if upload is not None and upload.filename:
                services.save_logo(upload.read(services.MAX_LOGO_BYTES + 1))
            elif form.remove_logo.data:
                services.remove_logo()
        except services.OrganisationError as exc:
            db.session.rollback()
            form.logo.errors = [str(exc)]
        else:
            for name in FIELDS:
                setattr(organisation, name, getattr(form, name).data or "")
            db.session.commit()
            flash(_("The organisation's settings are saved."), "success")
            return redirect(url_for(".settings"))
    # Settings never saved are the defaults, with no history (and no audit entries).
    history = history_for(current)
    return render_template(
        "organisation/settings.html",
        form=form,
        organisation=current,
        history=history,
        max_logo_kb=services.MAX_LOGO_BYTES // 1024,
    )


@bp.route("/organisation/logo/<filename>")
def logo(filename: str):
    """The current logo (public: the signup form and emails show it). Its name carries
    a digest of its content, so it may be cached for good."""
    organisation = services.get()
    if not organisation.logo_filename or filename != organisation.logo_filename:
        abort(404)
    response = send_from_directory(
        services.logo_directory(),
        organisation.logo_filename,
        mimetype=organisation.logo_content_type or None,
        max_age=365 * 24 * 3600,
    )
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def init_app(app) -> None:
    app.register_blueprint(bp)

    @app.context_processor
    def organisation_context():
        return {"organisation": services.get(), "organisation_logo_url": services.logo_url}
