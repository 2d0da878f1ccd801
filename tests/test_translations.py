"""Every UI string has a Norwegian Bokmål translation (the default language)."""

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
METHODS = [("crm/**.py", "python"), ("templates/**.html", "jinja2"), ("templates/**.txt", "jinja2")]
KEYWORDS = {
    "_": None,
    "gettext": None,
    "lazy_gettext": None,
    "_l": None,
    "ngettext": (1, 2),
    "N_": None,
}


def extracted_messages() -> dict[str, str]:
    found = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(ROOT),
        METHODS,
        keywords=KEYWORDS,
        options_map={"templates/**": {"extensions": "jinja2.ext.i18n"}},
    ):
        if filename.startswith((".venv", "tests", "migrations")):
            continue
        for msgid in message if isinstance(message, tuple) else (message,):
            if msgid:
                found.setdefault(msgid, f"{filename}:{lineno}")
    return found


def norwegian_catalog() -> dict[str, str]:
    catalog = {}
    for po in sorted((ROOT / "translations" / "nb" / "LC_MESSAGES").glob("*.po")):
        with po.open("rb") as fh:
            for message in read_po(fh):
                if message.id:
                    ids = message.id if isinstance(message.id, tuple) else (message.id,)
                    strings = (
                        message.string if isinstance(message.string, tuple) else (message.string,)
                    )
                    for msgid in ids:
                        catalog[msgid] = strings[0]
    return catalog


def test_every_ui_string_is_translated_to_norwegian():
    catalog = norwegian_catalog()
    missing = {m: where for m, where in extracted_messages().items() if not catalog.get(m)}
    assert not missing, "untranslated: " + "; ".join(
        f"{m!r} ({w})" for m, w in sorted(missing.items())[:40]
    )


def test_no_msgid_is_translated_twice_across_area_catalogs():
    seen: dict[str, str] = {}
    clashes = []
    for po in sorted((ROOT / "translations" / "nb" / "LC_MESSAGES").glob("*.po")):
        with po.open("rb") as fh:
            for message in read_po(fh):
                if not message.id:
                    continue
                msgid = message.id[0] if isinstance(message.id, tuple) else message.id
                if msgid in seen:
                    clashes.append(f"{msgid!r} in {seen[msgid]} and {po.name}")
                seen[msgid] = po.name
    assert not clashes, clashes[:20]


# The cluster's words for its own things: one msgid serves every area (the catalogs are
# merged), so a word translated for one area's sense shows up in another's pages ("Event"
# was "Hendelse", the email log's delivery event, on the events list and the home page).
GLOSSARY = {
    "Event": "Arrangement",
    "Events": "Arrangementer",
    "Sessions": "Økter",
    "Fees": "Kontingent",
    "Follow-ups": "Oppfølginger",
}


def test_the_clusters_own_words_keep_their_norwegian_names():
    catalog = norwegian_catalog()
    wrong = {word: catalog.get(word) for word, nb in GLOSSARY.items() if catalog.get(word) != nb}
    assert not wrong, wrong


if __name__ == "__main__":
    # `python -m tests.test_translations`: the missing entries, ready to paste into a .po file.
    catalog = norwegian_catalog()
    for msgid, where in sorted(extracted_messages().items(), key=lambda item: item[1]):
        if not catalog.get(msgid):
            escaped = msgid.replace("\\", "\\\\").replace('"', '\\"')
            print(f'#: {where}\nmsgid "{escaped}"\nmsgstr ""\n')
