"""Whatever a browser or script sends to the member pages, the answer is never a 500."""

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crm.extensions import db
from crm.members.models import Company, Contact
from tests.factories import make_company, make_contact

# Any text a form can carry: control characters (NUL too), long strings, non-Latin.
junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400)
FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def log_in_once(client, auth, role: str = "staff") -> None:
    # Fixtures are set up once per test, not per example: log in only the first time
    # (the login form is throttled).
    if client.get("/networks").status_code == 302:
        auth.login(role)


COMPANY_FIELDS = (
    "orgnr name org_form_code nace_code nace_text employees municipality_number "
    "municipality_name street_address postal_code postal_place website membership_status "
    "member_since resigned_on notes"
).split()
CONTACT_FIELDS = (
    "first_name last_name email phone job_title company is_primary_contact networks "
    "left_company notes confirm_duplicate"
).split()


@FUZZ
@given(values=st.fixed_dictionaries({f: junk for f in COMPANY_FIELDS}))
def test_company_form_survives_garbage(app, client, auth, values):
    log_in_once(client, auth)
    with app.app_context():
        existing = db.session.scalar(db.select(Company.id)) or make_company().id
    for url in ("/companies/new", f"/companies/{existing}/edit"):
        assert client.post(url, data=values).status_code in (200, 302)
    assert client.post(f"/companies/{existing}/activities", data=values).status_code in (200, 302)


@FUZZ
@given(values=st.fixed_dictionaries({f: junk for f in CONTACT_FIELDS}))
def test_contact_form_survives_garbage(app, client, auth, values):
    log_in_once(client, auth)
    with app.app_context():
        existing = db.session.scalar(db.select(Contact.id)) or make_contact().id
    for url in ("/contacts/new", f"/contacts/{existing}/edit"):
        assert client.post(url, data=values).status_code in (200, 302)
    merge = client.post(f"/contacts/{existing}/merge", data={"other_id": values["company"]})
    assert merge.status_code in (200, 302, 404)
    network = client.post(
        "/networks/new", data={"name": values["first_name"], "description": values["notes"]}
    )
    assert network.status_code in (200, 302)


@FUZZ
@given(
    args=st.dictionaries(
        st.sampled_from(
            [
                "q",
                "municipality",
                "network",
                "status",
                "role",
                "archived",
                "sort",
                "page",
                "company",
                "state",
                "partial",
                "other",
            ]
        ),
        junk,
    )
)
# Digits that str.isdigit() takes and int() refuses (found by this test: a 500).
@example(args={"network": "²", "company": "٣", "page": "²"})
def test_lists_and_exports_survive_garbage_query_strings(client, auth, args):
    log_in_once(client, auth, "treasurer")
    for url in (
        "/companies",
        "/contacts",
        "/companies/export.csv",
        "/contacts/export.xlsx",
        "/companies/lookup",
        "/networks/1",
    ):
        assert client.get(url, query_string=args).status_code in (200, 404), url
