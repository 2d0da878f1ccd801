"""Login (with an optional second factor), logout, passwords, and the admin's user pages."""

import time

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import current_user, logout_user
from limits import parse as parse_limit
from redis.exceptions import RedisError

from crm.auth import services, throttle, tokens
from crm.auth.forms import (
    ROLE_LABELS,
    ChangePasswordForm,
    CodeForm,
    ForgotPasswordForm,
    LoginForm,
    SecuritySettingsForm,
    SetPasswordForm,
    UserCreateForm,
    UserEditForm,
)
from crm.auth.models import User
from crm.auth.permissions import permission_required
from crm.auth.sessions import keep_this_session, start_session
from crm.extensions import db, limiter
from crm.queue import get_redis
from crm.urls import safe_next

bp = Blueprint("auth", __name__)
admin_bp = Blueprint("admin", __name__, url_prefix="/admin")

# A password-reset email per address at most this often, silently (the answer never
# differs, so an inbox cannot be flooded and nothing is revealed).
RESET_ADDRESS_LIMIT = parse_limit("3 per hour")
# How long the code step of a login stays open, and how many wrong codes it takes.
CODE_STEP_SECONDS = 300
CODE_FAILURE_LIMIT = 5
PENDING_KEY = "auth_pending_login"
SETUP_KEY = "auth_totp_setup"


def _safe_next(target: str | None) -> str:
    return safe_next(target, url_for("main.index"))


def _locale() -> str:
    return str(get_locale() or "nb")


# --- the gate: forced password change and required second factor ---------------------

OPEN_DURING_GATE = {"static", "auth.logout", "i18n.set_language", "main.healthz"}


@bp.before_app_request
def account_gate():
    """A user who must change their password, or set up a required second factor, does
    that first: every other page sends them there."""
    if request.endpoint in OPEN_DURING_GATE or not current_user.is_authenticated:
        return None
    if current_user.must_change_password:
        if request.endpoint != "auth.change_password":
            return redirect(url_for("auth.change_password"))
        return None
    if current_user.totp_secret is None and services.totp_required(current_user):
        if request.endpoint not in ("auth.two_factor", "auth.change_password"):
            flash(_("Set up a second factor to continue."), "info")
            return redirect(url_for("auth.two_factor"))
    return None


# --- login ---------------------------------------------------------------------------


def _finish_login(user: User, remember: bool, target: str):
    """Log the user in here, then send them on (or to the password change they owe)."""
    services.record_login(user)
    db.session.commit()
    start_session(user, remember=remember)
    if user.must_change_password:
        flash(_("Choose your own password before you go on."), "info")
        target = url_for("auth.change_password")
    response = redirect(target)
    throttle.remember_device(response, user.email)
    return response


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = LoginForm()
    if form.validate_on_submit():
        key = services.throttle_key(form.email.data)
        device = throttle.device_for(key)
        ip = request.remote_addr
        if throttle.is_blocked(key, ip, device):
            flash(
                _(
                    "Too many failed attempts for this address. Wait a few minutes, "
                    "or reset your password."
                ),
                "error",
            )
            return render_template("auth/login.html", form=form), 429
        user = services.authenticate(form.email.data, form.password.data)
        if user is None:
            throttle.record_failure(key, ip, device)
            flash(_("Wrong email or password."), "error")
        else:
            throttle.clear(key, ip)
            target = _safe_next(request.args.get("next"))
            if user.totp_secret:
                session[PENDING_KEY] = [
                    user.id,
                    user.session_version,
                    bool(form.remember.data),
                    target,
                    int(time.time()),
                ]
                return redirect(url_for("auth.login_code"))
            return _finish_login(user, bool(form.remember.data), target)
    return render_template("auth/login.html", form=form)


def _pending_login() -> tuple[User, bool, str] | None:
    """The user who passed the password step in this browser a moment ago."""
    match session.get(PENDING_KEY):
        case [int(user_id), int(version), bool(remember), str(target), int(started)]:
            if time.time() - started > CODE_STEP_SECONDS:
                return None
            user = db.session.get(User, user_id)
            if user and user.active and user.session_version == version and user.totp_secret:
                return user, remember, target
    return None


def _code_failures(user: User) -> int:
    key = f"klynge:totp-fail:{user.id}"
    try:
        redis = get_redis()
        redis.set(key, 0, ex=throttle.WINDOW_SECONDS, nx=True)
        return int(redis.incr(key))
    except RedisError:
        return 0


@bp.route("/login/code", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
def login_code():
    pending = _pending_login()
    if pending is None:
        session.pop(PENDING_KEY, None)
        flash(_("Please log in again."), "info")
        return redirect(url_for("auth.login"))
    user, remember, target = pending
    form = CodeForm()
    if form.validate_on_submit():
        if services.verify_totp(user.totp_secret, form.code.data):
            session.pop(PENDING_KEY, None)
            return _finish_login(user, remember, target)
        if _code_failures(user) >= CODE_FAILURE_LIMIT:
            session.pop(PENDING_KEY, None)
            flash(_("Too many wrong codes. Log in again in a few minutes."), "error")
            return redirect(url_for("auth.login"))
        form.code.errors.append(_("The code is not right. Try the one the app shows now."))
    return render_template("auth/login_code.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    if current_user.is_authenticated:
        # Ends this session and every other one, remember cookies included.
        current_user.end_sessions()
        db.session.commit()
    logout_user()
    session.pop(PENDING_KEY, None)
    flash(_("You are logged out."), "info")
    return redirect(url_for("auth.login"))


# --- passwords -----------------------------------------------------------------------


def _reset_allowed(key: str) -> bool:
    if not limiter.enabled or not current_app.config.get("RATELIMIT_ENABLED", True):
        return True
    return limiter.limiter.hit(RESET_ADDRESS_LIMIT, "password-reset-address", key)


@bp.route("/password/forgot", methods=["GET", "POST"])
@limiter.limit("5 per minute;30 per hour", methods=["POST"])
def forgot_password():
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        if _reset_allowed(services.throttle_key(form.email.data)):
            user = services.find_user(form.email.data)
            if user is not None and user.active:
                services.send_password_reset(user, locale=_locale())
                db.session.commit()
        # The same answer whether or not the address has an account.
        return render_template("auth/reset_sent.html")
    return render_template("auth/forgot_password.html", form=form)


@bp.route("/password/<any(reset, invite):purpose>/<token>", methods=["GET", "POST"])
@limiter.limit("20 per minute", methods=["POST"])
def set_password(purpose: str, token: str):
    try:
        link = tokens.read_password_token(token, purpose)
    except tokens.LinkExpired:
        return render_template("auth/link_invalid.html", expired=True, purpose=purpose), 410
    except tokens.LinkInvalid:
        return render_template("auth/link_invalid.html", expired=False, purpose=purpose), 404
    form = SetPasswordForm()
    if form.validate_on_submit():
        user = link.user
        services.change_password(user, form.password.data)
        db.session.commit()
        throttle.clear(user.email)
        if current_user.is_authenticated:
            logout_user()
        flash(_("Your password is set. Log in with it."), "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/set_password.html", form=form, user=link.user, purpose=purpose)


@bp.route("/account/password", methods=["GET", "POST"])
@permission_required("account.own")
def change_password():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        if not current_user.check_password(form.current_password.data):
            form.current_password.errors.append(_("That is not your current password."))
        elif form.password.data == form.current_password.data:
            form.password.errors.append(_("Choose a password you have not used here."))
        else:
            user = current_user._get_current_object()
            services.change_password(user, form.password.data)
            db.session.commit()
            keep_this_session(user)  # every other session ends
            flash(_("Your password is changed. You are logged out everywhere else."), "success")
            return redirect(url_for("main.index"))
    return render_template("auth/change_password.html", form=form)


@bp.route("/account/two-factor", methods=["GET", "POST"])
@permission_required("account.own")
def two_factor():
    """Set up (or turn off) the authenticator-app code asked for after the password."""
    form = CodeForm()
    required = services.totp_required(current_user)
    if current_user.totp_secret:
        if form.validate_on_submit():
            if required:
                flash(_("A second factor is required for your role."), "error")
            elif services.verify_totp(current_user.totp_secret, form.code.data):
                services.disable_totp(current_user)
                db.session.commit()
                flash(_("The second factor is turned off."), "success")
                return redirect(url_for("auth.two_factor"))
            else:
                form.code.errors.append(_("The code is not right."))
        return render_template("auth/two_factor.html", form=form, enabled=True, required=required)
    secret = session.get(SETUP_KEY)
    if not isinstance(secret, str) or len(secret) != 32:
        secret = session[SETUP_KEY] = services.new_totp_secret()
    if form.validate_on_submit():
        if services.verify_totp(secret, form.code.data):
            user = current_user._get_current_object()
            services.enable_totp(user, secret)
            user.end_sessions()  # a session opened without the code ends
            db.session.commit()
            session.pop(SETUP_KEY, None)
            keep_this_session(user)
            flash(_("The second factor is on: log-ins now ask for a code."), "success")
            return redirect(url_for("main.index"))
        form.code.errors.append(_("The code is not right. Check the key and the phone's clock."))
    return render_template(
        "auth/two_factor.html",
        form=form,
        enabled=False,
        required=required,
        secret=secret,
        secret_groups=[secret[i : i + 4] for i in range(0, len(secret), 4)],
        uri=services.totp_uri(current_user, secret),
    )


# --- admin: users ----------------------------------------------------------------------


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
            user = services.create_user(form.email.data, form.role.data, None, form.name.data)
        except services.UserError as exc:
            form.email.errors.append(str(exc))
        else:
            services.invite_user(user, locale=_locale())
            db.session.commit()
            flash(
                _(
                    "User %(email)s created. An invitation to set a password is on its way.",
                    email=user.email,
                ),
                "success",
            )
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
            user.name = services.clean_name(form.name.data)
            user.role = form.role.data
            if user.active and not form.active.data:
                services.deactivate(user)  # ends their sessions at once
            else:
                user.active = form.active.data
            if form.remove_totp.data and user.totp_secret:
                services.disable_totp(user)
            db.session.commit()
            flash(_("User %(email)s saved.", email=user.email), "success")
            return redirect(url_for("admin.user_list"))
    return render_template("admin/user_form.html", form=form, user=user)


@admin_bp.route("/users/<int:user_id>/send-link", methods=["POST"])
@permission_required("users.manage")
def user_send_link(user_id: int):
    """Email the user a link to set a password: the invitation again, or a reset."""
    user = db.get_or_404(User, user_id)
    if not user.active:
        flash(_("The user is deactivated."), "error")
    else:
        if user.has_usable_password:
            services.send_password_reset(user, locale=_locale())
        else:
            services.invite_user(user, locale=_locale())
        db.session.commit()
        flash(_("A link to set a password is on its way to %(email)s.", email=user.email), "info")
    return redirect(url_for("admin.user_edit", user_id=user.id))


@admin_bp.route("/security", methods=["GET", "POST"])
@permission_required("users.manage")
def security():
    settings = services.security_settings()
    form = SecuritySettingsForm(obj=settings)
    if form.validate_on_submit():
        settings.require_totp_for_privileged = form.require_totp_for_privileged.data
        db.session.commit()
        flash(_("Security settings saved."), "success")
        return redirect(url_for("admin.security"))
    db.session.commit()  # the row created on first visit
    return render_template("admin/security.html", form=form)
