"""Turning a newsletter's Markdown into the email people get: HTML and text parts.

The body is Markdown, converted and then sanitised (nh3) so that whatever staff paste
cannot carry scripts, forms or styles into the email or the public archive. The
branded layout (templates/email/newsletters/) is rendered once per newsletter with
substitution tags (`%greeting%`, `%unsubscribe_url%`, …) where each recipient's own
values go; the provider (or the outbox backend) replaces them per recipient. CSS is
inlined with css-inline, because most email clients ignore style sheets.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlsplit

import css_inline
import markdown
import nh3
from flask import current_app, render_template
from flask_babel import force_locale
from flask_babel import gettext as _

from crm import PROJECT_ROOT
from crm.mail.backends import substitute

# Substitution tags. HTML and text get separate tags for values that need escaping in
# HTML (names come from a public form), so each part gets its value in its own form.
TAG_GREETING = "%greeting%"
TAG_GREETING_HTML = "%greeting_html%"
TAG_FIRST_NAME = "%first_name%"
TAG_FIRST_NAME_HTML = "%first_name_html%"
# Inside a link or image address the name is percent-encoded (it cannot end the address
# or start a scheme such as `javascript:`).
TAG_FIRST_NAME_URL = "%first_name_url%"
TAG_GREETING_URL = "%greeting_url%"
TAG_UNSUBSCRIBE = "%unsubscribe_url%"
TAG_PREFERENCES = "%preferences_url%"
SUBSTITUTION_TAGS = (
    TAG_GREETING,
    TAG_GREETING_HTML,
    TAG_GREETING_URL,
    TAG_FIRST_NAME,
    TAG_FIRST_NAME_HTML,
    TAG_FIRST_NAME_URL,
    TAG_UNSUBSCRIBE,
    TAG_PREFERENCES,
)


def tags_used(*parts: str | None) -> frozenset[str]:
    """The substitution tags that occur in these parts of an email (subject, HTML, text)."""
    return frozenset(tag for tag in SUBSTITUTION_TAGS if any(tag in (p or "") for p in parts))


# The same merge fields in Norwegian, for staff who write in Norwegian. They are turned
# into the tags above (through the one `substitute`) before anything else sees the text.
MERGE_FIELD_ALIASES = {"%fornavn%": TAG_FIRST_NAME, "%hilsen%": TAG_GREETING}


def merge_field_tag(locale: str) -> str:
    """The first-name merge field as the compose page shows it in that language."""
    return "%fornavn%" if locale == "nb" else TAG_FIRST_NAME


def canonical_merge_fields(text: str) -> str:
    """Staff-written text with Norwegian merge fields (`%fornavn%`) as the English tags."""
    return substitute(text, MERGE_FIELD_ALIASES) if text else text


ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "caption",
    "code",
    "dd",
    "del",
    "div",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "small",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "th": {"align", "colspan", "rowspan"},
    "td": {"align", "colspan", "rowspan"},
    "abbr": {"title"},
}
URL_SCHEMES = {"http", "https", "mailto"}
CONTENT_CSS = PROJECT_ROOT / "templates" / "email" / "newsletters" / "content.css"
MAX_BODY_LENGTH = 200_000


def _absolute_urls(tag: str, attribute: str, value: str) -> str | None:
    # Links and images in an email must be absolute: make site-relative ones so.
    if attribute in ("href", "src") and value.startswith("/") and not value.startswith("//"):
        return current_app.config["PUBLIC_BASE_URL"] + value
    if attribute in ("href", "src") and value.startswith("//"):
        return "https:" + value
    return value


def body_html(body_markdown: str) -> str:
    """The Markdown body as sanitised HTML (no scripts, styles, forms or event handlers)."""
    raw = markdown.markdown(
        canonical_merge_fields((body_markdown or "")[:MAX_BODY_LENGTH].replace("\x00", "")),
        extensions=["extra", "sane_lists"],
        output_format="html",
    )
    return nh3.clean(
        raw,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        clean_content_tags={"script", "style"},
        attribute_filter=_absolute_urls,
        link_rel="noopener",
    )


def _is_own_url(url: str) -> bool:
    own = urlsplit(current_app.config["PUBLIC_BASE_URL"])
    target = urlsplit(url)
    return (target.scheme, target.netloc) == (own.scheme, own.netloc)


_IMG = re.compile(r"<img\b[^>]*>")
_ATTR = re.compile(r'(\w+)="([^"]*)"')


def page_html(body: str) -> str:
    """Sanitised HTML for our own pages (preview, archive).

    Pages load nothing from other hosts (privacy, CSP), so images hosted elsewhere
    become a labelled placeholder there; in the email they are shown as written.
    """

    def placeholder(match: re.Match) -> str:
        attrs = dict(_ATTR.findall(match.group(0)))
        src = html_lib.unescape(attrs.get("src", ""))
        if not src or _is_own_url(src):
            return match.group(0)
        alt = attrs.get("alt") or urlsplit(src).path.rsplit("/", 1)[-1] or src
        host = html_lib.escape(urlsplit(src).netloc)
        return (
            f'<span class="remote-image" title="{html_lib.escape(src)}">'
            f"<span>{alt}</span><small>{host}</small></span>"
        )

    return _IMG.sub(placeholder, body_html(body))


# -- text part -------------------------------------------------------------------------


class _TextWriter(HTMLParser):
    """A small HTML-to-text converter for sanitised body HTML."""

    BLOCKS = {"p", "div", "table", "tr", "dl", "figure", "pre", "blockquote", "ul", "ol"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[str | None] = []
        self.lists: list[list] = []  # [kind, counter]
        self.heading: str | None = None
        self.heading_start = 0
        self.quote = 0

    def _newlines(self, count: int) -> None:
        text = "".join(self.out)
        stripped = text.rstrip(" ")
        have = len(stripped) - len(stripped.rstrip("\n"))
        if not stripped:
            return
        self.out = [stripped + "\n" * max(0, count - have)]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in self.BLOCKS:
            self._newlines(2 if tag != "tr" else 1)
        if tag in ("ul", "ol"):
            self.lists.append([tag, 0])
        elif tag == "li":
            self._newlines(1)
            indent = "  " * max(0, len(self.lists) - 1)
            if self.lists and self.lists[-1][0] == "ol":
                self.lists[-1][1] += 1
                self.out.append(f"{indent}{self.lists[-1][1]}. ")
            else:
                self.out.append(f"{indent}- ")
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._newlines(2)
            self.heading = tag
            self.heading_start = len("".join(self.out))
        elif tag == "br":
            self.out.append("\n")
        elif tag == "hr":
            self._newlines(2)
            self.out.append("-" * 40)
            self._newlines(2)
        elif tag == "a":
            self.links.append(attrs.get("href"))
            self.link_start = len("".join(self.out))
        elif tag == "img":
            alt = attrs.get("alt") or ""
            self.out.append(f"[{alt}]" if alt else "")
        elif tag == "blockquote":
            self.quote += 1
        elif tag in ("td", "th"):
            self.out.append(" ")

    def handle_endtag(self, tag):
        if tag in ("ul", "ol") and self.lists:
            self.lists.pop()
            self._newlines(2)
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6") and self.heading:
            text = "".join(self.out)[self.heading_start :].strip()
            if tag in ("h1", "h2"):
                self.out.append("\n" + ("=" if tag == "h1" else "-") * min(len(text), 60))
            self.heading = None
            self._newlines(2)
        elif tag == "a" and self.links:
            href = self.links.pop()
            text = "".join(self.out)[self.link_start :].strip()
            if href and href != text and not href.startswith("mailto:"):
                self.out.append(f" ({href})")
        elif tag == "blockquote":
            self.quote = max(0, self.quote - 1)
            self._newlines(2)
        elif tag in self.BLOCKS:
            self._newlines(2 if tag != "tr" else 1)

    def handle_data(self, data):
        if not data.strip() and "\n" in data:
            return
        text = re.sub(r"\s+", " ", data)
        if self.quote and ("".join(self.out).endswith("\n") or not self.out):
            text = "> " + text.lstrip()
        self.out.append(text)

    def text(self) -> str:
        lines = [line.rstrip() for line in "".join(self.out).splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def html_to_text(html: str) -> str:
    writer = _TextWriter()
    writer.feed(html)
    writer.close()
    return writer.text()


# -- the whole email --------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


def newsletter_locale() -> str:
    """Newsletters are written in the organisation's language (the default UI locale)."""
    return current_app.config.get("BABEL_DEFAULT_LOCALE", "nb")


def render_email(
    subject: str,
    preheader: str,
    body: str,
    archive_url: str = "",
    *,
    remote_images: bool = True,
    network_names: tuple[str, ...] = (),
    actions: tuple[tuple[str, str], ...] = (),
) -> RenderedEmail:
    """The email for every recipient, with substitution tags for their own values.

    `remote_images=False` is for showing it on our pages (the preview), which load
    nothing from other hosts. `network_names`: network mail, whose footer says why it
    came and that its unsubscribe link stops the network's mail. `actions`: buttons
    after the text, (label, substitution tag of the recipient's own URL).
    """
    from crm.subscriptions.network_mail import network_notice

    subject, preheader = canonical_merge_fields(subject), canonical_merge_fields(preheader)
    content = body_html(body) if remote_images else page_html(body)
    context = {
        "subject": subject,
        "preheader": preheader,
        "content_html": _html_tags(content),
        "content_text": html_to_text(body_html(body)),
        "greeting_html": TAG_GREETING_HTML,
        "greeting_text": TAG_GREETING,
        "unsubscribe_url": TAG_UNSUBSCRIBE,
        "preferences_url": TAG_PREFERENCES,
        "archive_url": archive_url,
        "public_base_url": current_app.config["PUBLIC_BASE_URL"],
    }
    with force_locale(newsletter_locale()):
        context["notice"] = network_notice(network_names) if network_names else ""
        context["actions"] = [(str(label), tag) for label, tag in actions]
        html = render_template(
            "email/newsletters/newsletter.html",
            **{**context, "subject": _html_tags(subject), "preheader": _html_tags(preheader)},
        )
        text = render_template("email/newsletters/newsletter.txt", **context)
    inliner = css_inline.CSSInliner(
        load_remote_stylesheets=False, extra_css=_content_css(), keep_style_tags=False
    )
    return RenderedEmail(subject=subject, html=inliner.inline(html), text=text)


# Merge fields staff may write in the subject, preview text and body stand, in the HTML
# part, for their escaped variants: a name from the public form is text, not markup.
_HTML_TAGS = {TAG_FIRST_NAME: TAG_FIRST_NAME_HTML, TAG_GREETING: TAG_GREETING_HTML}


_URL_TAGS = {TAG_FIRST_NAME: TAG_FIRST_NAME_URL, TAG_GREETING: TAG_GREETING_URL}
_TAG_MARKUP = re.compile(r"<[^>]*>")
_URL_ATTRIBUTE = re.compile(r'(\b(?:href|src)=")([^"]*)(")', re.IGNORECASE)


def _html_tags(text: str) -> str:
    """Merge fields in HTML, each replaced by the variant for the context it lands in:
    URL-encoded in link and image addresses, HTML-escaped (quotes too) elsewhere, in
    text and in attribute values such as title and alt."""

    def in_markup(match: re.Match) -> str:
        return _URL_ATTRIBUTE.sub(
            lambda m: m[1] + substitute(m[2], _URL_TAGS) + m[3], match.group(0)
        )

    return substitute(_TAG_MARKUP.sub(in_markup, text), _HTML_TAGS)


def _content_css() -> str:
    return Path(CONTENT_CSS).read_text(encoding="utf-8")


# Other areas add to a mailing: buttons with each recipient's own links (events: an
# invitation's registration and "can't come" links). Each provider is an object with
# `actions(newsletter) -> [(label, tag)]` (frozen into the email) and
# `substitutions(newsletter, contact_ids) -> {contact_id: {tag: value}}` (per batch).
MAIL_EXTRAS: list = []


def mail_actions(newsletter) -> tuple[tuple[str, str], ...]:
    return tuple(action for extra in MAIL_EXTRAS for action in extra.actions(newsletter))


def extra_substitutions(newsletter, contact_ids: list[int]) -> dict[int, dict[str, str]]:
    """Per-recipient values for the tags of `mail_actions` (none for plain newsletters)."""
    values: dict[int, dict[str, str]] = {}
    for extra in MAIL_EXTRAS:
        for contact_id, tags in extra.substitutions(newsletter, contact_ids).items():
            values.setdefault(contact_id, {}).update(tags)
    return values


# What html.escape(quote=True) replaces; most names have none of it (one search is
# cheaper than its five replaces, 2,000 times a batch).
_HTML_SPECIAL = re.compile("[&<>\"']")


class Personalizer:
    """Each recipient's substitution values; the greeting is translated once.

    `tags`: only these are given (those the email uses: `tags_used`), so a 1,000-recipient
    request does not carry, encode and post values that replace nothing; all by default.
    """

    def __init__(self, tags: Iterable[str] = SUBSTITUTION_TAGS):
        marker = "\x00NAME\x00"
        with force_locale(newsletter_locale()):
            self._with_name = _("Hi %(name)s,", name=marker).split(marker)
            self._without_name = _("Hi,")
        self._tags = frozenset(tags)

    def greeting(self, first_name: str) -> str:
        """The greeting line: "Hei Kari," or, without a name, "Hei,"."""
        first_name = " ".join((first_name or "").split())
        if not first_name:
            return self._without_name
        return first_name.join(self._with_name)

    def substitutions(
        self, first_name: str, unsubscribe_url: str, preferences_url: str
    ) -> dict[str, str]:
        first_name = " ".join((first_name or "").split())
        greeting = self.greeting(first_name)
        tags = self._tags
        values = {}
        for plain, html, url, value in (
            (TAG_GREETING, TAG_GREETING_HTML, TAG_GREETING_URL, greeting),
            (TAG_FIRST_NAME, TAG_FIRST_NAME_HTML, TAG_FIRST_NAME_URL, first_name),
        ):
            if plain in tags:
                values[plain] = value
            # Quotes escaped too: the HTML variants also stand in attribute values.
            if html in tags:
                values[html] = html_lib.escape(value) if _HTML_SPECIAL.search(value) else value
            if url in tags:
                values[url] = quote(value, safe="")
        if TAG_UNSUBSCRIBE in tags:
            values[TAG_UNSUBSCRIBE] = unsubscribe_url
        if TAG_PREFERENCES in tags:
            values[TAG_PREFERENCES] = preferences_url
        return values


# A name between commas or before a closing mark goes with the comma before it
# ("Takk, %first_name%!" -> "Takk!"); one that opens a sentence or line, with what
# follows it ("%first_name%, velkommen" -> "velkommen"); any other, with the spaces
# before it ("Hei %first_name%" -> "Hei").
_TAG = re.escape(TAG_FIRST_NAME)
_NAME_AFTER_COMMA = re.compile(rf",[ \t\xa0]*{_TAG}(?=[ \t\xa0]*[,.!?;:])")
_NAME_OPENING = re.compile(rf"(^|[>\n])[ \t\xa0]*{_TAG}[ \t\xa0]*[,;:]?[ \t\xa0]*")
_NAME = re.compile(rf"[ \t\xa0]*{_TAG}")


def without_name(text: str, *, html: bool = False) -> str:
    """Text (or sanitised HTML) for a reader whose name we do not know: the public archive.

    A greeting written with the name ("Hei %first_name%,") becomes the greeting
    without one ("Hei,"), as Personalizer gives a recipient without a first name; any
    other %first_name% goes without leaving a stray comma or space.
    """
    text = canonical_merge_fields(text)
    personalizer = Personalizer()
    with_name, without = personalizer.greeting(TAG_FIRST_NAME), personalizer.greeting("")
    if html:
        with_name = html_lib.escape(with_name, quote=False)
        without = html_lib.escape(without, quote=False)
    text = text.replace(with_name, without).replace(TAG_GREETING, without)
    text = _NAME_AFTER_COMMA.sub("", text)
    text = _NAME_OPENING.sub(r"\1", text)
    return _NAME.sub("", text)
