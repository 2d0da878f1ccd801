"""Leaving is one click; changing topics is one page; links can be revoked."""

import re
import urllib.parse

from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer

from crm.extensions import db
from crm.members.models import Contact
from crm.subscriptions import ledger, links, tokens
from crm.subscriptions.models import ConsentEvent
from tests.factories import make_subscriber


def path(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def active(app, contact_id) -> list[str]:
    with app.app_context():
        contact = db.session.get(Contact, contact_id)
        return sorted(t.slug for t in ledger.subscribed_topics(contact))


def subscriber(app, topics=("generelt", "hr")) -> tuple[int, str, str]:
    with app.test_request_context():
        contact = make_subscriber("kari@example.no", topics=topics)
        return (
            contact.id,
            path(links.unsubscribe_url(contact)),
            path(links.preferences_url(contact)),
        )


def test_unsubscribe_page_shows_one_button_and_a_link_to_preferences(app, client):
    contact_id, unsubscribe, preferences = subscriber(app)
    page = client.get(unsubscribe)
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    assert body.count("<form") == 1 and body.count('type="submit"') == 1
    assert f'href="{preferences}"' in body
    assert active(app, contact_id) == ["generelt", "hr"]  # looking changes nothing


def test_one_click_post_withdraws_everything_without_login_or_csrf(app, client):
    app.config["WTF_CSRF_ENABLED"] = True
    contact_id, unsubscribe, _ = subscriber(app)
    response = client.post(
        unsubscribe,
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert "Du er meldt av" in response.get_data(as_text=True)
    assert active(app, contact_id) == []
    # Posting again (mail providers retry) records nothing new.
    client.post(unsubscribe, data={})
    with app.app_context():
        kinds = db.session.scalars(db.select(ConsentEvent.kind).order_by(ConsentEvent.id)).all()
        assert kinds.count("withdrawn") == 2  # one per topic, once


def test_preferences_change_topics_with_csrf(app, client):
    contact_id, _, preferences = subscriber(app)
    page = client.get(preferences).get_data(as_text=True)
    checked = re.findall(r'<input checked[^>]*value="([^"]+)"', page)
    assert sorted(checked) == ["generelt", "hr"]
    response = client.post(preferences, data={"topics": ["generelt", "logistikk"], "save": "1"})
    assert response.status_code == 302
    assert active(app, contact_id) == ["generelt", "logistikk"]
    assert "Valgene dine er lagret." in client.get(preferences).get_data(as_text=True)
    client.post(preferences, data={"unsubscribe_all": "1"})
    assert active(app, contact_id) == []

    app.config["WTF_CSRF_ENABLED"] = True
    response = client.post(preferences, data={"topics": ["hr"], "save": "1"})
    assert response.status_code == 400
    assert active(app, contact_id) == []


def test_revoked_links_stop_working(app, client):
    contact_id, unsubscribe, preferences = subscriber(app)
    with app.app_context():
        links.revoke_links(db.session.get(Contact, contact_id))
        db.session.commit()
    assert client.get(unsubscribe).status_code == 404
    assert client.post(unsubscribe).status_code == 404
    assert client.get(preferences).status_code == 404
    assert active(app, contact_id) == ["generelt", "hr"]
    with app.test_request_context():
        fresh = path(links.unsubscribe_url(db.session.get(Contact, contact_id)))
    assert fresh != unsubscribe and client.get(fresh).status_code == 200


def test_unsubscribe_headers_and_bulk_urls_for_the_newsletter_area(app):
    contact_id, unsubscribe, _ = subscriber(app)
    with app.app_context():
        contact = db.session.get(Contact, contact_id)
        headers = links.unsubscribe_headers(contact)
        assert headers == {
            "List-Unsubscribe": f"<http://127.0.0.1:5000{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        assert links.unsubscribe_urls([contact_id, 999]) == {
            contact_id: f"http://127.0.0.1:5000{unsubscribe}",
            999: links.public_url(f"/unsubscribe/{tokens.make_link_token(999, 1)}"),
        }


@settings(max_examples=300, deadline=None)
@given(
    contact_id=st.integers(1, 2**31 - 1) | st.sampled_from([1111111111, 2147483647]),
    version=st.integers(1, 10**12),
    secret=st.text(min_size=1, max_size=40),
)
def test_link_tokens_are_exactly_what_itsdangerous_makes(contact_id, version, secret):
    # The fast link serializer (newsletters sign 1,000 links a batch) must make the very
    # tokens itsdangerous's URLSafeSerializer makes and reads: links already sent, and
    # links read by code that uses the plain serializer, keep working.
    from crm.subscriptions.tokens import LINK_SALT, _link_serializer, _sign_links

    plain = URLSafeSerializer(secret, salt=LINK_SALT)
    token = _link_serializer(secret).dumps([contact_id, version])
    assert plain.loads(token) == [contact_id, version]
    # What a newsletter batch signs with: the same bytes, spelt out.
    assert _sign_links(secret, [(contact_id, version)]) == [token]
    network_token = _link_serializer(secret).dumps([contact_id, version, 7])
    assert _sign_links(secret, [(contact_id, version, 7)]) == [network_token]
    if not plain.dumps([contact_id, version]).startswith("."):  # not zlib-compressed
        assert token == plain.dumps([contact_id, version])
