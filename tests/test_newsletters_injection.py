"""A subscriber's name cannot break out of the HTML context it lands in, and a subject
that would break a header is refused at the form (issue 14)."""

import html
from html.parser import HTMLParser

import pytest

from crm.extensions import db
from crm.mail.backends import substitute
from crm.newsletters import compose
from crm.newsletters.models import Newsletter
from tests.factories import make_subscriber

HOSTILE_NAMES = [
    '" onmouseover="alert(1)',
    "' onerror='alert(1)",
    '"><script>alert(1)</script>',
    "javascript:alert(1)",
    "Kari & Ola <b>",
]
BODY = (
    "%greeting%\n\n"
    '[Les mer](https://example.no/les?navn=%first_name% "Til deg, %first_name%")\n\n'
    '![Bilde av %first_name%](https://example.no/bilde.png "%first_name%")\n\n'
    "[Rett inn](%first_name%)\n\n"
    "Vi ses, %first_name%!"
)


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _personal_html(app, name: str) -> str:
    with app.test_request_context():
        rendered = compose.render_email("Hei %first_name%", "", BODY, "https://example.no/a")
        subs = compose.Personalizer().substitutions(name, "https://u.example", "https://p.example")
        return substitute(rendered.html, subs)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_first_name_stays_inside_the_link_title_and_alt_it_stands_in(app, name):
    parser = _Collect()
    parser.feed(_personal_html(app, name))
    tags = parser.tags
    assert not [t for t, _ in tags if t == "script"]
    assert not [t for t, attrs in tags if "onmouseover" in attrs or "onerror" in attrs]
    [link] = [a for tag, a in tags if tag == "a" and "example.no/les" in a.get("href", "")]
    assert link["title"] == f"Til deg, {name}"  # the whole name, as text, in its attribute
    assert "'" not in link["href"] and '"' not in link["href"] and " " not in link["href"]
    [image] = [attrs for tag, attrs in tags if tag == "img" and "bilde.png" in attrs.get("src", "")]
    assert image["alt"] == f"Bilde av {name}" and image["title"] == name
    for tag, attrs in tags:
        for attribute in ("href", "src"):
            assert not attrs.get(attribute, "").lower().startswith("javascript:"), (tag, attrs)
    assert f"Vi ses, {name}!" in "".join(parser.text)


def test_a_plain_name_reads_normally_in_links_and_text(app):
    page = _personal_html(app, "Kari")
    assert 'href="https://example.no/les?navn=Kari"' in page
    assert 'title="Til deg, Kari"' in page and 'alt="Bilde av Kari"' in page
    assert "Vi ses, Kari!" in html.unescape(page)


@pytest.mark.parametrize(
    "subject",
    [
        "=?utf-8?q?Nytt=0D=0ABcc:_victim@example.no?=",
        "Hei =?utf-8?b?DQpCY2M6IHhAZXhhbXBsZS5ubw==?=",
        "=?utf-8?q?line=0Abreak?=",
    ],
)
def test_a_subject_with_an_encoded_line_break_is_refused_at_the_form(app, client, auth, subject):
    auth.login("staff")
    with app.app_context():
        make_subscriber("kari@example.no")
    response = client.post(
        "/newsletters/new",
        data={"subject": subject, "preheader": "", "body": "Tekst", "topics": ["generelt"]},
    )
    assert response.status_code == 200
    assert "linjeskift" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Newsletter.id))) == 0


def test_an_ordinary_subject_with_encoded_looking_text_is_accepted(app, client, auth):
    auth.login("staff")
    with app.app_context():
        make_subscriber("kari@example.no")
    response = client.post(
        "/newsletters/new",
        data={"subject": "Nytt om =?-tegn og æøå", "body": "Tekst", "topics": ["generelt"]},
    )
    assert response.status_code == 302
