"""What a new staff user met on the newsletter pages: sending to nobody, test copies that
greet nobody or go only to oneself, an English-only merge field, an email log that
left newsletters out without saying so."""

from datetime import timedelta

from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.newsletters import compose, reconciler, services
from crm.newsletters.models import Newsletter, NewsletterRecipient
from crm.timeutil import OSLO, utcnow
from tests.factories import make_newsletter, make_subscriber, make_user


def _detail(client, newsletter_id: int) -> str:
    return client.get(f"/newsletters/{newsletter_id}").get_data(as_text=True)


def test_a_newsletter_nobody_would_get_cannot_be_sent(app, client, auth):
    auth.login("staff")
    with app.app_context():
        newsletter_id = make_newsletter().id  # nobody has consent for the general topic

    page = _detail(client, newsletter_id)
    assert "Ingen ville fått det nå" in page
    assert f'action="/newsletters/{newsletter_id}/send"' not in page  # no Send button

    response = client.post(f"/newsletters/{newsletter_id}/send", follow_redirects=True)
    assert "Ingen ville fått dette nyhetsbrevet" in response.get_data(as_text=True)
    with app.app_context():
        newsletter = db.session.get(Newsletter, newsletter_id)
        assert newsletter.state == "draft" and newsletter.started_at is None
        assert db.session.scalar(db.select(db.func.count()).select_from(NewsletterRecipient)) == 0


def test_a_newsletter_nobody_would_get_cannot_be_scheduled(app, client, auth):
    auth.login("staff")
    with app.app_context():
        newsletter_id = make_newsletter().id
    tomorrow = (utcnow() + timedelta(days=1)).astimezone(OSLO)
    response = client.post(
        f"/newsletters/{newsletter_id}/schedule",
        data={"date": tomorrow.strftime("%Y-%m-%d"), "time": "09:00"},
        follow_redirects=True,
    )
    assert "Ingen ville fått dette nyhetsbrevet" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Newsletter, newsletter_id).state == "draft"


def test_a_scheduled_newsletter_whose_audience_left_goes_back_to_draft_with_the_reason(
    app, app_ctx
):
    contact = make_subscriber("kari@example.no")
    newsletter = make_newsletter()
    services.schedule(newsletter, utcnow() + timedelta(hours=1))
    db.session.commit()
    contact.email = None  # the only recipient is gone by the time it is due
    newsletter.scheduled_at = utcnow() - timedelta(minutes=1)
    db.session.commit()

    assert reconciler.start_due_newsletters() == 0
    db.session.expire_all()
    newsletter = db.session.get(Newsletter, newsletter.id)
    assert newsletter.state == "draft" and newsletter.scheduled_at is None
    assert "Ingen ville fått dette nyhetsbrevet" in newsletter.pause_reason


def test_the_test_copy_greets_like_the_preview_when_the_user_has_no_name(app, client, auth):
    user = auth.login("staff")
    with app.app_context():
        db.session.get(type(user), user.id).name = ""
        db.session.commit()
        make_subscriber("kari@example.no")
        newsletter_id = make_newsletter(body="Hei %first_name%! Velkommen.").id

    preview = client.get(f"/newsletters/{newsletter_id}/preview").get_data(as_text=True)
    assert "Hei Kari! Velkommen." in preview
    assert client.post(f"/newsletters/{newsletter_id}/test").status_code == 302
    with app.app_context():
        copy = db.session.scalar(db.select(EmailMessage))
        assert "Hei Kari! Velkommen." in copy.text_body and "Hei !" not in copy.text_body
        assert "Hei Kari," in copy.text_body  # the greeting line, as in the preview
        assert "Hei Kari! Velkommen." in copy.html_body


def test_a_test_copy_can_go_to_a_colleagues_address(app, client, auth):
    auth.login("staff")
    with app.app_context():
        make_subscriber("kari@example.no")
        newsletter_id = make_newsletter().id
    page = _detail(client, newsletter_id)
    assert 'name="email"' in page and f'action="/newsletters/{newsletter_id}/test"' in page

    response = client.post(
        f"/newsletters/{newsletter_id}/test",
        data={"email": " Kollega@Example.no "},
        follow_redirects=True,
    )
    assert "kollega@example.no" in response.get_data(as_text=True)
    with app.app_context():
        copy = db.session.scalar(db.select(EmailMessage))
        assert copy.to_email == "kollega@example.no" and copy.category == "newsletter-test"


def test_a_test_copy_to_a_bad_address_gets_a_message_and_sends_nothing(app, client, auth):
    auth.login("staff")
    with app.app_context():
        newsletter_id = make_newsletter().id
    for bad in ("", "not an address", "a@b", "kari@example.no\r\nBcc: x@example.no"):
        response = client.post(
            f"/newsletters/{newsletter_id}/test", data={"email": bad}, follow_redirects=True
        )
        assert response.status_code == 200
        assert "gyldig e-postadresse" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(EmailMessage)) == 0


def test_the_norwegian_merge_field_stands_for_the_first_name(app, app_ctx, outbox):
    make_subscriber("kari@example.no", first_name="Kari")
    newsletter = make_newsletter("Til %fornavn%", body="Hei %fornavn%, og %first_name% igjen.")
    html = compose.render_email(newsletter.subject, "", newsletter.body)
    assert "%fornavn%" not in html.html + html.text + html.subject
    user = make_user("staff")
    services.test_send(newsletter, user)
    db.session.commit()
    copy = db.session.scalar(db.select(EmailMessage))
    assert "Hei Staff, og Staff igjen." in copy.text_body
    assert "Til Staff" in copy.subject
    # The archive (no reader's name) drops it like the English one.
    assert compose.without_name("Hei %fornavn%, velkommen") == "Hei, velkommen"


def test_the_compose_page_offers_the_norwegian_merge_field(app, client, auth):
    auth.login("staff")
    page = client.get("/newsletters/new").get_data(as_text=True)
    assert "%fornavn% blir fornavnet" in page


def test_the_email_log_says_what_it_lists_and_names_categories_in_words(app, client, auth):
    user = auth.login("staff")
    with app.app_context():
        make_subscriber("kari@example.no")
        newsletter_id = make_newsletter().id
    client.post(f"/newsletters/{newsletter_id}/test")
    page = client.get("/mail/messages").get_data(as_text=True)
    assert "Nyhetsbrev vises ikke her" in page
    assert "Testkopi av nyhetsbrev" in page and ">newsletter-test<" not in page
    assert user.email in page
    with app.app_context():
        message_id = db.session.scalar(db.select(EmailMessage.id))
    detail = client.get(f"/mail/messages/{message_id}").get_data(as_text=True)
    assert "Testkopi av nyhetsbrev" in detail
