"""The app as a visitor first meets it: health check, login, language, headers."""

from crm.auth.models import User
from crm.extensions import db
from tests.factories import PASSWORD, make_user


def test_healthz_reports_database_and_redis(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_staff_pages_redirect_anonymous_visitors_to_login(client):
    response = client.get("/companies")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_login_with_right_password_reaches_companies(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    response = client.post(
        "/login?next=/companies", data={"email": "Ola@Example.no", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/companies"
    assert client.get("/companies").status_code == 200


def test_login_with_wrong_password_is_refused_with_a_message(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    response = client.post("/login", data={"email": "ola@example.no", "password": "wrong"})
    assert response.status_code == 200
    assert "Feil e-post eller passord" in response.get_data(as_text=True)
    assert client.get("/companies").status_code == 302


def test_login_never_redirects_to_another_site(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    response = client.post(
        "/login?next=//evil.example.com/", data={"email": "ola@example.no", "password": PASSWORD}
    )
    assert response.headers["Location"] == "/"


def test_deactivated_user_cannot_log_in(app, client):
    with app.app_context():
        user = make_user("staff", email="gone@example.no")
        user.active = False
        db.session.commit()
    response = client.post("/login", data={"email": "gone@example.no", "password": PASSWORD})
    assert response.status_code == 200
    assert client.get("/companies").status_code == 302


def test_login_is_throttled_per_account(app, client):
    from crm.auth.throttle import ADDRESS_LIMIT

    with app.app_context():
        make_user("staff", email="target@example.no")
    statuses = [
        client.post(
            "/login",
            data={"email": "target@example.no", "password": "guess"},
            environ_base={"REMOTE_ADDR": f"10.0.0.{i}"},
        ).status_code
        for i in range(ADDRESS_LIMIT + 1)
    ]
    assert statuses[0] == 200
    assert statuses[-1] == 429


def test_login_is_throttled_per_ip(client):
    statuses = [
        client.post("/login", data={"email": f"u{i}@example.no", "password": "x"}).status_code
        for i in range(12)
    ]
    assert 429 in statuses
    assert statuses[0] == 200


def test_pages_are_norwegian_by_default_and_english_on_request(client):
    assert "Logg inn" in client.get("/login").get_data(as_text=True)
    client.post("/language/en", data={"next": "/login"})
    assert "Log in to Klynge" in client.get("/login").get_data(as_text=True)


def test_security_headers_forbid_inline_script_and_framing(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_session_cookie_is_httponly_and_samesite_lax(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    response = client.post("/login", data={"email": "ola@example.no", "password": PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie


def test_session_cookie_is_secure_over_https(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    response = client.post(
        "/login",
        data={"email": "ola@example.no", "password": PASSWORD},
        base_url="https://localhost",
    )
    assert "Secure" in response.headers["Set-Cookie"]


def test_forms_refuse_posts_without_csrf_token(app, client):
    app.config["WTF_CSRF_ENABLED"] = True
    with app.app_context():
        make_user("staff", email="ola@example.no")
    response = client.post("/login", data={"email": "ola@example.no", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/companies").status_code == 302


def test_unknown_page_gets_a_friendly_404(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "Siden finnes ikke" in response.get_data(as_text=True)


def test_cli_creates_user_with_role(app, runner):
    result = runner.invoke(args=["users", "create", "kasserer@example.no", "--role", "treasurer"])
    assert result.exit_code == 0, result.output
    assert "Invitation to set a password emailed to kasserer@example.no" in result.output
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(email="kasserer@example.no"))
        assert user.role == "treasurer"


def test_cli_refuses_a_bad_email_and_creates_nothing(app, runner):
    result = runner.invoke(args=["users", "create", "not-an-email", "--role", "staff"])
    assert result.exit_code != 0
    assert "invalid email" in result.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 0


def test_first_admin_is_created_once(app, runner, monkeypatch):
    monkeypatch.setenv("CRM_ADMIN_EMAIL", "boss@example.no")
    monkeypatch.setenv("CRM_ADMIN_PASSWORD", "a-long-enough-password")
    first = runner.invoke(args=["ensure-admin"])
    second = runner.invoke(args=["ensure-admin"])
    assert "First admin: boss@example.no" in first.output
    assert "One-time password" not in first.output
    assert second.output == ""
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 1


def test_staff_pages_with_personal_data_are_not_stored_by_browsers(app, client, auth):
    auth.login("admin")
    for path in ("/companies", "/contacts", "/admin/users", "/companies/export.csv"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers.get("Cache-Control") == "no-store", path


def test_static_files_stay_cacheable_for_logged_in_staff(app, client, auth):
    auth.login("staff")
    response = client.get("/static/favicon.svg")
    assert "no-store" not in response.headers.get("Cache-Control", "")
