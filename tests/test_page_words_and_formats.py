"""What staff read on the pages: the cluster's own words for things, and numbers, phone
numbers and amounts written the Norwegian way (found in a review of every page)."""

import re

from tests.events_factories import make_event


def _text(response) -> str:
    """The page's text without tags, spaces folded (as a person reads it)."""
    html = response.get_data(as_text=True)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_an_event_is_an_arrangement_on_the_events_list_and_the_home_page(app, client, auth):
    # "Event" was translated for the email log ("Hendelse": a delivery event), and that
    # word headed the events list and labelled every event on the home page.
    with app.app_context():
        make_event("Styrketrening: automasjon")
    auth.login("admin")
    events = client.get("/events").get_data(as_text=True)
    assert "<th>Arrangement</th>" in events and "Hendelse" not in events
    home = client.get("/home").get_data(as_text=True)
    assert "Styrketrening: automasjon" in home
    assert "Arrangement</span>" in home and "Hendelse" not in home
