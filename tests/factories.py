"""Small factories that make tests short: users, companies, contacts, and a logged-in client."""

import itertools
import random

from crm.auth.models import User
from crm.extensions import db
from crm.members.models import Company, Contact, Network
from crm.members.normalize import make_orgnr

_counter = itertools.count(1)
PASSWORD = "correct horse battery staple"


def make_user(role: str = "staff", email: str | None = None, password: str = PASSWORD) -> User:
    user = User(email=email or f"{role}{next(_counter)}@example.no", role=role, name=role.title())
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    db.session.refresh(user)  # loaded, so tests can read it after the app context ends
    return user


def unique_orgnr(rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    while True:
        orgnr = make_orgnr(str(rng.randint(80_000_000, 99_999_999)))
        if orgnr and not db.session.scalar(db.select(Company.id).where(Company.orgnr == orgnr)):
            return orgnr


def make_company(name: str = "Testbedrift AS", **fields) -> Company:
    fields.setdefault("orgnr", unique_orgnr())
    fields.setdefault("municipality_number", "3401")
    fields.setdefault("municipality_name", "Kongsvinger")
    company = Company(name=name, **fields)
    db.session.add(company)
    db.session.commit()
    db.session.refresh(company)
    return company


def make_contact(first_name: str = "Kari", last_name: str = "Nordmann", **fields) -> Contact:
    networks = fields.pop("networks", [])
    contact = Contact(first_name=first_name, last_name=last_name, **fields)
    contact.networks = [
        n if isinstance(n, Network) else db.session.scalar(db.select(Network).filter_by(name=n))
        for n in networks
    ]
    db.session.add(contact)
    db.session.commit()
    db.session.refresh(contact)
    return contact


class Auth:
    """Logs a test client in and out, like a person at the login form."""

    def __init__(self, app, client):
        self.app = app
        self.client = client

    def login(self, role: str = "staff", user: User | None = None):
        with self.app.app_context():
            if user is None:
                user = make_user(role)
            email = user.email
        response = self.client.post("/login", data={"email": email, "password": PASSWORD})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        return user

    def logout(self):
        return self.client.post("/logout")
