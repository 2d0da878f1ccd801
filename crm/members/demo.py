"""Realistic demo data: industrial companies in the Kongsvinger region, their people, networks.

`generate` builds the companies and contacts (deterministic for a given `random.Random`
and day) and writes them through the ORM, so the audit log and search terms see them like
any other record; `crm demo` calls it. Benchmarks call `generate(..., bulk=True)`: the
same data written with Core bulk inserts, search terms included, audit log left out.

Later areas add their own demo data (newsletter subscribers, a fee year) by appending a
function to `DEMO_HOOKS`; `crm demo` calls each with (rng, companies, contacts, options)
after the companies exist, and prints the line of text it returns, if any.
"""

import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from crm.members.importing import ORG_FORMS
from crm.members.models import Activity, Company, Contact, Network, SearchTerm, contact_network
from crm.members.normalize import make_orgnr
from crm.members.search import terms_for
from crm.table_versions import note_written

DemoHook = Callable[[random.Random, list, list, dict], str | None]
DEMO_HOOKS: list[DemoHook] = []

NETWORKS = ("Logistikk", "Produksjon", "HR", "Marked/salg", "Bærekraft")
NETWORK_SLUGS = {
    "Logistikk": "logistikk",
    "Produksjon": "produksjon",
    "HR": "hr",
    "Marked/salg": "marked-salg",
    "Bærekraft": "baerekraft",
}


@dataclass(frozen=True)
class Municipality:
    number: str
    name: str
    weight: int
    postal: tuple[tuple[str, str], ...]  # real postal codes and places in the municipality
    places: tuple[str, ...]  # names that go into company names


MUNICIPALITIES = (
    Municipality(
        "3401",
        "Kongsvinger",
        34,
        (
            ("2211", "Kongsvinger"),
            ("2212", "Kongsvinger"),
            ("2213", "Kongsvinger"),
            ("2214", "Kongsvinger"),
            ("2216", "Roverud"),
            ("2219", "Brandval"),
            ("2224", "Austmarka"),
        ),
        ("Kongsvinger", "Vinger", "Roverud", "Brandval", "Austmarka", "Glåmdal"),
    ),
    Municipality(
        "3414",
        "Nord-Odal",
        11,
        (("2120", "Sagstua"), ("2123", "Bruvoll"), ("2130", "Knapper")),
        ("Nord-Odal", "Odal", "Sagstua", "Mo"),
    ),
    Municipality(
        "3415",
        "Sør-Odal",
        16,
        (("2100", "Skarnes"), ("2110", "Slåstad"), ("2114", "Disenå"), ("2116", "Sander")),
        ("Skarnes", "Odal", "Sør-Odal", "Disenå", "Sander"),
    ),
    Municipality(
        "3416",
        "Eidskog",
        11,
        (("2230", "Skotterud"), ("2233", "Vestmarka"), ("2240", "Magnor")),
        ("Eidskog", "Skotterud", "Magnor", "Matrand"),
    ),
    Municipality(
        "3417",
        "Grue",
        9,
        (("2260", "Kirkenær"), ("2264", "Grinder"), ("2265", "Namnå")),
        ("Grue", "Kirkenær", "Solør", "Finnskog", "Namnå"),
    ),
    Municipality(
        "3418",
        "Åsnes",
        12,
        (("2270", "Flisa"), ("2280", "Gjesåsen")),
        ("Åsnes", "Flisa", "Solør", "Finnskog"),
    ),
    Municipality(
        "3419",
        "Våler",
        7,
        (("2436", "Våler i Solør"), ("2435", "Braskereidfoss")),
        ("Våler", "Solør", "Braskereid"),
    ),
)

REGIONS = ("Glåmdal", "Solør", "Odal", "Vinger", "Glomma", "Innlandet", "Hedmark", "Finnskog")


@dataclass(frozen=True)
class Industry:
    nace_code: str
    nace_text: str
    names: tuple[str, ...]  # {place}, {region}, {surname}
    employees: tuple[int, int]
    weight: int
    titles: tuple[str, ...]  # job titles typical of the trade, besides the manager
    cooperative: bool = False


INDUSTRIES = (
    Industry(
        "16.100",
        "Saging, høvling og impregnering av tre",
        ("{place} Sag", "{place} Sagbruk", "{surname} Sag", "{place} Trelast", "{region} Tre"),
        (6, 180),
        14,
        ("Produksjonssjef", "Skiftleder", "Innkjøpsansvarlig tømmer", "Logistikksjef"),
    ),
    Industry(
        "16.231",
        "Produksjon av monteringsferdige hus",
        ("{place} Hus", "{region} Trehus", "{surname} Hus", "{region} Hytteproduksjon"),
        (10, 140),
        5,
        ("Prosjektleder", "Salgssjef", "Produksjonssjef"),
    ),
    Industry(
        "16.232",
        "Produksjon av vinduer og dører av tre",
        ("{place} Vindu og Dør", "{region} Vindusfabrikk", "{surname} Snekkerverksted"),
        (5, 90),
        4,
        ("Produksjonssjef", "Salgssjef", "Kvalitetsleder"),
    ),
    Industry(
        "16.240",
        "Produksjon av emballasje av tre",
        ("{place} Emballasje", "{surname} Pall", "{region} Pallefabrikk"),
        (4, 60),
        4,
        ("Driftsleder", "Logistikksjef", "Salgssjef"),
    ),
    Industry(
        "25.620",
        "Bearbeiding av metaller",
        ("{place} Mekaniske Verksted", "{surname} Mek", "{place} Maskinering", "{region} CNC"),
        (4, 120),
        12,
        ("Verkstedsleder", "Produksjonssjef", "Kvalitetsleder", "Teknisk sjef"),
    ),
    Industry(
        "25.110",
        "Produksjon av metallkonstruksjoner og deler",
        ("{place} Stål", "{surname} Sveis", "{region} Stålkonstruksjoner", "{place} Smie"),
        (3, 110),
        8,
        ("Prosjektleder", "Produksjonssjef", "HMS-leder", "Sveiseansvarlig"),
    ),
    Industry(
        "28.300",
        "Produksjon av landbruks- og skogbruksmaskiner",
        ("{region} Skogmaskin", "{place} Landbruksmaskiner", "{surname} Maskin"),
        (8, 160),
        4,
        ("Teknisk sjef", "Salgssjef", "Produksjonssjef", "Ettermarkedsansvarlig"),
    ),
    Industry(
        "33.120",
        "Reparasjon av maskiner",
        ("{place} Maskinservice", "{surname} Hydraulikk", "{region} Industriservice"),
        (2, 40),
        5,
        ("Serviceleder", "Driftsleder"),
    ),
    Industry(
        "10.130",
        "Produksjon av kjøtt- og fjørfevarer",
        ("{place} Kjøtt", "{region} Pølsemakeri", "{surname} Kjøttindustri"),
        (6, 150),
        4,
        ("Kvalitetsleder", "Produksjonssjef", "Salgssjef"),
    ),
    Industry(
        "10.710",
        "Produksjon av brød og ferske konditorvarer",
        ("{place} Bakeri", "{surname}s Bakeri", "{region} Bakeri og Konditori"),
        (3, 60),
        4,
        ("Bakermester", "Salgssjef", "Driftsleder"),
    ),
    Industry(
        "10.310",
        "Bearbeiding og konservering av poteter",
        ("{region} Potet", "{place} Potetindustri", "{region} Potetpakkeri"),
        (5, 90),
        3,
        ("Produksjonssjef", "Kvalitetsleder", "Logistikksjef"),
        cooperative=True,
    ),
    Industry(
        "10.510",
        "Produksjon av meierivarer",
        ("{region} Meieri", "{place} Gårdsmeieri"),
        (4, 70),
        2,
        ("Produksjonssjef", "Kvalitetsleder", "Markedssjef"),
        cooperative=True,
    ),
    Industry(
        "49.410",
        "Godstransport på vei",
        ("{surname} Transport", "{place} Transport", "{region} Logistikk", "{surname} Budservice"),
        (3, 120),
        10,
        ("Trafikkleder", "Logistikksjef", "Disponent", "HMS-leder"),
    ),
    Industry(
        "52.100",
        "Lagring",
        ("{place} Lager og Terminal", "{region} Logistikksenter", "{place} Terminal"),
        (4, 80),
        4,
        ("Lagersjef", "Logistikksjef", "Driftsleder"),
    ),
    Industry(
        "23.610",
        "Produksjon av betongprodukter for bygge- og anleggsvirksomhet",
        ("{place} Betong", "{region} Betongelement", "{surname} Betongvarer"),
        (5, 110),
        5,
        ("Produksjonssjef", "Prosjektleder", "HMS-leder"),
    ),
    Industry(
        "23.630",
        "Produksjon av ferdigblandet betong",
        ("{region} Ferdigbetong", "{place} Betongstasjon"),
        (3, 40),
        2,
        ("Driftsleder", "Salgssjef"),
    ),
    Industry(
        "22.210",
        "Produksjon av plater, ark, rør og profiler av plast",
        ("{place} Plast", "{region} Plastindustri", "{surname} Rør og Profil"),
        (6, 140),
        5,
        ("Produksjonssjef", "Kvalitetsleder", "Bærekraftsansvarlig", "Salgssjef"),
    ),
    Industry(
        "22.220",
        "Produksjon av plastemballasje",
        ("{region} Plastemballasje", "{place} Emballasjeplast"),
        (5, 90),
        3,
        ("Produksjonssjef", "Markedssjef", "Bærekraftsansvarlig"),
    ),
    Industry(
        "27.120",
        "Produksjon av elektriske fordelings- og kontrolltavler",
        ("{region} Tavlebygg", "{surname} Automasjon", "{place} Elektroteknikk"),
        (4, 70),
        4,
        ("Teknisk sjef", "Prosjektleder", "Salgssjef"),
    ),
    Industry(
        "71.129",
        "Annen teknisk konsulentvirksomhet",
        ("{region} Ingeniørtjenester", "{place} Prosjekt og Teknikk", "{surname} Rådgivning"),
        (2, 45),
        3,
        ("Fagleder", "Prosjektleder", "Markedssjef"),
    ),
    Industry(
        "38.110",
        "Innsamling av ikke-farlig avfall",
        ("{region} Gjenvinning", "{place} Miljøservice"),
        (5, 80),
        2,
        ("Driftsleder", "Bærekraftsansvarlig", "Logistikksjef"),
    ),
    Industry(
        "02.200",
        "Avvirkning",
        ("{place} Skogsdrift", "{surname} Skog", "{region} Skogentreprenør"),
        (1, 25),
        3,
        ("Driftsleder", "Logistikksjef"),
    ),
)

STREETS = (
    "Industrivegen",
    "Næringsvegen",
    "Storgata",
    "Sagvegen",
    "Verkstedvegen",
    "Fabrikkvegen",
    "Stasjonsvegen",
    "Glommavegen",
    "Jernbanegata",
    "Brugata",
    "Sentrumsvegen",
    "Skogvegen",
    "Terminalvegen",
    "Elvevegen",
    "Kirkevegen",
    "Solørvegen",
    "Odalsvegen",
    "Riksvegen",
    "Gamle Kongeveg",
    "Mølleråsen",
)

SURNAMES = (
    "Hansen Johansen Olsen Larsen Andersen Pedersen Nilsen Kristiansen Jensen Karlsen "
    "Johnsen Pettersen Eriksen Berg Haugen Hagen Johannessen Andreassen Jacobsen Dahl "
    "Jørgensen Halvorsen Henriksen Lund Sørensen Moen Gundersen Iversen Strand Solberg "
    "Svendsen Eide Knutsen Martinsen Paulsen Bakken Mathisen Lie Amundsen Rasmussen "
    "Lunde Solheim Moe Nygård Bakke Fredriksen Holm Lien Hauge Christensen Evensen "
    "Sæther Aas Myhre Thomassen Simonsen Danielsen Berntsen Rønning Arnesen Næss Vik "
    "Haug Thorsen Gulbrandsen Ruud Aasen Strøm Tangen Ødegård Brekke Østby Nordby "
    "Bråten Sandberg Rustad Kollerud Bekkelund Dæhli Vestli Sætre Flisberget Grønvold "
    "Skaaret Engen Nyhus Hovde Bergersen Rud Granli Kirkeby Mørk Nguyen Ali Nowak"
).split()

FIRST_NAMES = (
    "Ole Lars Per Jan Kjetil Bjørn Tor Morten Geir Espen Anders Thomas Martin Jonas "
    "Magnus Henrik Eirik Håkon Sindre Vegard Stian Trond Rune Arild Svein Knut Øyvind "
    "Even Audun Tore Pål Terje Amir Piotr Tomasz "
    "Anne Kari Ingrid Marit Hilde Silje Ida Nora Emma Ingvild Camilla Kristin Heidi "
    "Randi Tone Line Elin Gro Siri Åse Mari Hanne Trine Lene Monica Maria Anna Sara "
    "Thea Guro Solveig Tuva Agnieszka Fatima"
).split()

# Job title → the networks such a person tends to join.
TITLE_NETWORKS = {
    "Daglig leder": (),
    "Økonomisjef": (),
    "Økonomiansvarlig": (),
    "HR-leder": ("HR",),
    "Produksjonssjef": ("Produksjon",),
    "Skiftleder": ("Produksjon",),
    "Verkstedsleder": ("Produksjon",),
    "Kvalitetsleder": ("Produksjon", "Bærekraft"),
    "Teknisk sjef": ("Produksjon",),
    "Driftsleder": ("Produksjon",),
    "Sveiseansvarlig": ("Produksjon",),
    "Bakermester": ("Produksjon",),
    "Serviceleder": ("Produksjon",),
    "Fagleder": ("Produksjon",),
    "HMS-leder": ("HR", "Bærekraft"),
    "Bærekraftsansvarlig": ("Bærekraft",),
    "Logistikksjef": ("Logistikk",),
    "Lagersjef": ("Logistikk",),
    "Trafikkleder": ("Logistikk",),
    "Disponent": ("Logistikk",),
    "Innkjøpsansvarlig tømmer": ("Logistikk",),
    "Innkjøpssjef": ("Logistikk",),
    "Salgssjef": ("Marked/salg",),
    "Markedssjef": ("Marked/salg",),
    "Ettermarkedsansvarlig": ("Marked/salg",),
    "Prosjektleder": ("Produksjon",),
}
GENERAL_TITLES = ("HR-leder", "Innkjøpssjef", "Markedssjef", "HMS-leder")

ACTIVITY_SUMMARIES = {
    "meeting": (
        "Bedriftsbesøk",
        "Møte om kompetansebehov",
        "Oppstartsmøte i nettverket",
        "Møte om felles innkjøp av energi",
    ),
    "call": (
        "Telefon om medlemskap",
        "Oppfølging etter seminar",
        "Spørsmål om medlemskontingent",
    ),
    "seminar": (
        "Deltok på frokostmøte om lean produksjon",
        "Deltok på HR-forum",
        "Deltok på seminar om bærekraftsrapportering",
        "Deltok på logistikkdagen",
        "Deltok på messe for industrien i Glåmdalen",
    ),
    "email": ("Sendte informasjon om nettverkene", "Tilbud om lærlingeplass formidlet"),
    "note": ("Ønsker faktura på e-post", "Interessert i Produksjon-nettverket"),
}
PROSPECT_ACTIVITIES = {
    "call": ("Telefon om medlemskap",),
    "meeting": ("Møte om mulig medlemskap",),
}
PHONE_PREFIXES = (
    "40",
    "41",
    "45",
    "46",
    "47",
    "48",
    "90",
    "91",
    "92",
    "93",
    "94",
    "95",
    "97",
    "98",
    "99",
)
_TRANSLIT = str.maketrans({"æ": "ae", "ø": "o", "å": "a", "Æ": "ae", "Ø": "o", "Å": "a"})


def ascii_slug(text: str, separator: str = "-") -> str:
    """`Åsnes Sag & Høvleri` → `asnes-sag-hovleri`, for domains and mailbox names."""
    text = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    text = text.encode("ascii", "ignore").decode().lower()
    return separator.join(re.findall(r"[a-z0-9]+", text))


@dataclass
class DemoResult:
    companies: list = field(default_factory=list)
    contacts: list = field(default_factory=list)
    activities: int = 0
    network_links: int = 0


class _Generator:
    """Draws companies and people; every choice comes from `rng`, so a seed repeats them."""

    def __init__(self, rng: random.Random, today: date, taken_orgnr: set, taken_names: set):
        self.rng = rng
        self.today = today
        self.orgnrs = set(taken_orgnr)
        self.names = {n.casefold() for n in taken_names}
        self.domains: set[str] = set()
        self.emails: set[str] = set()
        self.municipality_weights = [m.weight for m in MUNICIPALITIES]
        self.industry_weights = [i.weight for i in INDUSTRIES]

    def orgnr(self) -> str:
        while True:
            candidate = make_orgnr(str(self.rng.randint(810_000_000, 999_999_999))[:8])
            if candidate and candidate not in self.orgnrs:
                self.orgnrs.add(candidate)
                return candidate

    def company(self) -> dict[str, Any]:
        rng = self.rng
        municipality = rng.choices(MUNICIPALITIES, self.municipality_weights)[0]
        industry = rng.choices(INDUSTRIES, self.industry_weights)[0]
        roll = rng.random()
        if industry.cooperative and roll < 0.5:
            org_form = "SA"
        elif roll < 0.07:
            org_form = "ENK"
        elif roll < 0.10:
            org_form = "ASA"
        else:
            org_form = "AS"
        name = self._name(industry, municipality, org_form)
        low, high = industry.employees
        if org_form == "ENK":
            employees = rng.randint(1, 4)
        elif org_form == "ASA":
            employees = rng.randint(max(high, 120), max(high, 120) * 3)
        else:  # log-uniform: many small firms, a few large ones
            employees = round(low * (high / low) ** rng.random())
        postal_code, postal_place = rng.choice(municipality.postal)
        domain = self._domain(name)
        status_roll = rng.random()
        status = (
            "member" if status_roll < 0.78 else "prospect" if status_roll < 0.92 else "resigned"
        )
        member_since = resigned_on = None
        if status in ("member", "resigned"):
            member_since = date(rng.randint(2006, self.today.year - 1), rng.randint(1, 12), 1)
        if status == "resigned":
            resigned_on = date(rng.randint(member_since.year + 1, self.today.year), 12, 31)
            resigned_on = min(resigned_on, self.today)
        notes = ""
        if rng.random() < 0.12:
            notes = rng.choice(
                (
                    "Ønsker faktura på e-post.",
                    "Aktuell for styret neste år.",
                    "Har lærlinger i industrimekanikerfaget.",
                    "Deltar i felles innkjøp av strøm.",
                    "Eierskifte våren " + str(self.today.year - 1) + ".",
                )
            )
        return {
            "orgnr": self.orgnr(),
            "name": name,
            "org_form_code": org_form,
            "org_form_name": ORG_FORMS[org_form],
            "nace_code": industry.nace_code,
            "nace_text": industry.nace_text,
            "employees": employees,
            "municipality_number": municipality.number,
            "municipality_name": municipality.name,
            "street_address": f"{rng.choice(STREETS)} {rng.randint(1, 120)}",
            "postal_code": postal_code,
            "postal_place": postal_place,
            "website": f"https://www.{domain}",
            "membership_status": status,
            "member_since": member_since,
            "resigned_on": resigned_on,
            "notes": notes,
            "bankrupt": status == "resigned" and rng.random() < 0.1,
            "winding_up": status != "member" and rng.random() < 0.03,
            "_domain": domain,
            "_industry": industry,
        }

    def _name(self, industry: Industry, municipality: Municipality, org_form: str) -> str:
        rng = self.rng
        for attempt in range(50):
            pattern = rng.choice(industry.names)
            base = pattern.format(
                place=rng.choice(municipality.places),
                region=rng.choice(REGIONS),
                surname=rng.choice(SURNAMES),
            )
            if attempt > 10:  # big data sets run out of plain names
                base = f"{base} {rng.choice(('Øst', 'Vest', 'Nord', 'Sør', 'Industri', 'Eiendom'))}"
            if attempt > 30:
                base = f"{base} {rng.randint(2, 999)}"
            if org_form != "ENK":
                name = f"{base} {org_form}"
            elif "{surname}" in pattern:
                name = base
            else:  # a sole proprietorship's name carries its owner's surname
                name = f"{base} {rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
            if name.casefold() not in self.names:
                self.names.add(name.casefold())
                return name
        raise RuntimeError("could not find an unused company name")

    def _domain(self, name: str) -> str:
        words = name.split()
        if words[-1] in ORG_FORMS:
            words = words[:-1]
        slug = ascii_slug(" ".join(words))
        domain, n = f"{slug}.no", 2
        while domain in self.domains:
            domain, n = f"{slug}{n}.no", n + 1
        self.domains.add(domain)
        return domain

    def people(self, company: dict[str, Any], count: int) -> list[dict[str, Any]]:
        rng = self.rng
        industry: Industry = company["_industry"]
        member = company["membership_status"] == "member"
        titles = ["Daglig leder"]
        pool = list(industry.titles) + list(GENERAL_TITLES)
        rng.shuffle(pool)
        if member and count > 1:
            titles.append(rng.choice(("Økonomisjef", "Økonomiansvarlig")))
        for title in pool:
            if len(titles) >= count:
                break
            if title not in titles:
                titles.append(title)
        people = []
        for index, title in enumerate(titles[:count]):
            first, last = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
            networks = set(TITLE_NETWORKS.get(title, ()))
            if member and rng.random() < 0.3:
                networks.add(rng.choice(NETWORKS))
            if not member and rng.random() < 0.7:
                networks = set()  # prospects rarely take part yet
            people.append(
                {
                    "first_name": first,
                    "last_name": last,
                    "email": self._email(first, last, company["_domain"]),
                    "phone": (
                        f"+47{rng.choice(PHONE_PREFIXES)}{rng.randint(0, 999_999):06d}"
                        if rng.random() < 0.92
                        else None
                    ),
                    "job_title": title,
                    "is_primary_contact": index == 0,
                    "is_invoice_contact": False,
                    "is_board_representative": False,
                    "active": index == 0 or rng.random() > 0.05,
                    "_networks": sorted(networks),
                }
            )
        if member and people:
            payer = next((p for p in people if p["job_title"].startswith("Økonomi")), people[0])
            payer["is_invoice_contact"] = True
            if rng.random() < 0.1:
                people[0]["is_board_representative"] = True
        return people

    def _email(self, first: str, last: str, domain: str) -> str:
        local = f"{ascii_slug(first, '')}.{ascii_slug(last, '')}"
        email, n = f"{local}@{domain}", 2
        while email in self.emails:
            email, n = f"{local}{n}@{domain}", n + 1
        self.emails.add(email)
        return email

    def activities(self, company: dict[str, Any]) -> list[dict[str, Any]]:
        rng = self.rng
        status = company["membership_status"]
        if status == "member":
            count, kinds = rng.choice((0, 1, 1, 2, 2, 3)), ACTIVITY_SUMMARIES
        elif status == "prospect":
            count, kinds = rng.choice((0, 1, 1, 2)), PROSPECT_ACTIVITIES
        else:
            count, kinds = rng.choice((0, 0, 1)), {"call": ("Samtale om utmelding",)}
        result = []
        for _ in range(count):
            kind = rng.choice(sorted(kinds))
            result.append(
                {
                    "kind": kind,
                    "summary": rng.choice(kinds[kind]),
                    "occurred_on": self.today - timedelta(days=rng.randint(0, 720)),
                }
            )
        return result


def _contact_counts(rng: random.Random, companies: int, contacts: int | None) -> list[int]:
    if contacts is None:
        return [rng.randint(2, 5) for _ in range(companies)]
    base, extra = divmod(contacts, companies)
    counts = [base + (1 if i < extra else 0) for i in range(companies)]
    rng.shuffle(counts)
    return counts


def _networks(session: Session) -> dict[str, Network]:
    found = {n.name: n for n in session.scalars(select(Network))}
    for name in NETWORKS:
        if name not in found:
            found[name] = Network(name=name, slug=NETWORK_SLUGS[name])
            session.add(found[name])
    return found


def _public(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if not k.startswith("_")}


def generate(
    session: Session,
    *,
    companies: int,
    contacts: int | None = None,
    rng: random.Random,
    today: date,
    bulk: bool = False,
) -> DemoResult:
    """Create `companies` companies with `contacts` contacts in all (default 2–5 each).

    Writes in the current transaction; the caller commits. The ORM path (default) goes
    through the audit log and the search index like any edit. `bulk=True` is for
    benchmarks: Core inserts with search terms but no audit entries, and no objects
    returned (the result lists hold ids).
    """
    taken_orgnr = set(session.scalars(select(Company.orgnr)))
    taken_names = set(session.scalars(select(Company.name)))
    generator = _Generator(rng, today, taken_orgnr, taken_names)
    networks = _networks(session)
    specs = []
    for count in _contact_counts(rng, companies, contacts):
        company = generator.company()
        specs.append((company, generator.people(company, count), generator.activities(company)))
    if bulk:
        return _write_bulk(session, specs, networks)
    return _write_orm(session, specs, networks)


def _write_orm(session: Session, specs: list, networks: dict[str, Network]) -> DemoResult:
    result = DemoResult()
    for company_spec, people, activities in specs:
        company = Company(**_public(company_spec))
        session.add(company)
        result.companies.append(company)
        primary = None
        for person in people:
            contact = Contact(company=company, **_public(person))
            contact.networks = [networks[n] for n in person["_networks"]]
            result.network_links += len(contact.networks)
            session.add(contact)
            result.contacts.append(contact)
            primary = primary or contact
        for activity in activities:
            session.add(Activity(company=company, contact=primary, **activity))
            result.activities += 1
        if len(result.companies) % 200 == 0:
            session.flush()
    session.flush()
    return result


def _write_bulk(session: Session, specs: list, networks: dict[str, Network]) -> DemoResult:
    # Core executemany without RETURNING: fetching generated ids row by row (SQLAlchemy's
    # sorted RETURNING) made this several times slower; the ids are read back by key.
    session.flush()  # networks get their ids
    connection = session.connection()
    company_table, contact_table = Company.__table__, Contact.__table__
    result = DemoResult()
    for start in range(0, len(specs), 2000):
        chunk = specs[start : start + 2000]
        rows = [_public(company) for company, _people, _activities in chunk]
        _insert_many(connection, company_table, rows)
        ids_by_orgnr = dict(
            connection.execute(
                select(company_table.c.orgnr, company_table.c.id).where(
                    company_table.c.orgnr.in_([row["orgnr"] for row in rows])
                )
            ).all()
        )
        company_ids = [ids_by_orgnr[row["orgnr"]] for row in rows]
        result.companies.extend(company_ids)
        terms, contact_rows, activity_rows = [], [], []
        for company_id, row, (_company, people, activities) in zip(
            company_ids, rows, chunk, strict=True
        ):
            shim = Company(name=row["name"], orgnr=row["orgnr"])
            terms.extend(
                {"record_type": "company", "record_id": company_id, "term": t}
                for t in terms_for(shim)
            )
            contact_rows.extend(dict(_public(p), company_id=company_id) for p in people)
            activity_rows.extend(dict(a, company_id=company_id) for a in activities)
        _insert_many(connection, contact_table, contact_rows)
        ids_by_key = {
            (company_id, email): contact_id
            for contact_id, company_id, email in connection.execute(
                select(contact_table.c.id, contact_table.c.company_id, contact_table.c.email).where(
                    contact_table.c.company_id.in_(company_ids)
                )
            )
        }
        links = []
        people_flat = [p for _c, people, _a in chunk for p in people]
        company_names = {cid: row["name"] for cid, row in zip(company_ids, rows, strict=True)}
        for person, row in zip(people_flat, contact_rows, strict=True):
            contact_id = ids_by_key[(row["company_id"], row["email"])]
            result.contacts.append(contact_id)
            links.extend(
                {"contact_id": contact_id, "network_id": networks[n].id}
                for n in person["_networks"]
            )
            terms.extend(
                {"record_type": "contact", "record_id": contact_id, "term": t}
                for t in terms_for(SimpleNamespace(**row), company_names.get(row["company_id"]))
            )
        _insert_many(connection, contact_network, links)
        _insert_many(connection, Activity.__table__, activity_rows)
        _insert_many(connection, SearchTerm.__table__, terms)
        result.network_links += len(links)
        result.activities += len(activity_rows)
    return result


def _insert_many(connection, table, rows: list[dict]) -> None:
    """Insert rows, with PostgreSQL's COPY where available (far faster than executemany)."""
    if not rows:
        return
    for column in table.columns:  # COPY skips Python-side defaults: fill them in here
        default = column.default
        if default is None or column.key in rows[0] or column.primary_key:
            continue
        for row in rows:
            row[column.key] = default.arg(None) if default.is_callable else default.arg
    if connection.dialect.name != "postgresql" or connection.dialect.driver != "psycopg":
        connection.execute(insert(table), rows)
        return
    columns = list(rows[0])
    names = ", ".join(f'"{c}"' for c in columns)
    note_written(connection, table.name)  # COPY goes around the cursor events
    raw = connection.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


def company_count(session: Session) -> int:
    return session.scalar(select(func.count(Company.id))) or 0
