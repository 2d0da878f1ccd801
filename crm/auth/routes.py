from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user

from crm.auth import services
from crm.auth.forms import ROLE_LABELS, LoginForm, UserCreateForm, UserEditForm
from crm.auth.models import User
from crm.auth.permissions import permission_required
from crm.extensions import db, limiter
from crm.urls import safe_next

bp = Blueprint("auth", __name__)
admin_bp = Blueprint("admin", __name__, url_prefix="/admin")


def _account_key() -> str:
    """Throttle key per account, so one address cannot be tried from many IPs."""
    return "login:" + (request.form.get("email") or "").strip().lower()[:254]


def _safe_next(target: str | None) -> str:
    return safe_next(target, url_for("main.index"))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
@limiter.limit("20 per hour", key_func=_account_key, methods=["POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = services.authenticate(form.email.data, form.password.data)
        if user is not None:
            db.session.commit()
            login_user(user, remember=form.remember.data)
            return redirect(_safe_next(request.args.get("next")))
        flash(_("Wrong email or password."), "error")
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    logout_user()
    flash(_("You are logged out."), "info")
    return redirect(url_for("auth.login"))


@admin_bp.route("/")
@permission_required("users.manage")
def index():
    return redirect(url_for("admin.user_list"))


@admin_bp.route("/users")
@permission_required("users.manage")
def user_list():
    users = db.session.scalars(db.select(User).order_by(User.email)).all()
    return render_template("admin/users.html", users=users, role_labels=ROLE_LABELS)


@admin_bp.route("/users/new", methods=["GET", "POST"])
@permission_required("users.manage")
def user_create():
    form = UserCreateForm()
    if form.validate_on_submit():
        try:
            user, password = services.create_user(
                form.email.data, form.role.data, form.password.data or None, form.name.data or ""
            )
        except services.UserError as exc:
            form.email.errors.append(str(exc))
        else:
            db.session.commit()
            if not form.password.data:
                flash(
                    _(
                        "User %(email)s created. One-time password: %(password)s",
                        email=user.email,
                        password=password,
                    ),
                    "success",
                )
            else:
                flash(_("User %(email)s created.", email=user.email), "success")
            return redirect(url_for("admin.user_list"))
    return render_template("admin/user_form.html", form=form, user=None)


@admin_bp.route("/users/<int:user_id>/edit", methods=["GET", "POST"])
@permission_required("users.manage")
def user_edit(user_id: int):
    user = db.get_or_404(User, user_id)
    form = UserEditForm(obj=user)
    if form.validate_on_submit():
        if user.id == current_user.id and (form.role.data != "admin" or not form.active.data):
            flash(_("You cannot remove your own administrator access."), "error")
        else:
            user.name = form.name.data or ""
            user.role = form.role.data
            user.active = form.active.data
            if form.password.data:
                user.set_password(form.password.data)
            db.session.commit()
            flash(_("User %(email)s saved.", email=user.email), "success")
            return redirect(url_for("admin.user_list"))
    return render_template("admin/user_form.html", form=form, user=user)
