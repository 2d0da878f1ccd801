"""Messages of an import: English on the command line, translated on web pages."""

from typing import Any

from flask_babel import gettext


def N_(msgid: str) -> str:
    """Marks a message for translation; `Message` translates it when it is shown."""
    return msgid


class Message:
    """A message for people: English on the command line, translated on web pages."""

    __slots__ = ("msgid", "params")

    def __init__(self, msgid: str, **params: Any) -> None:
        self.msgid = msgid
        self.params = params

    def __str__(self) -> str:
        return self.msgid % self.params if self.params else self.msgid

    def __repr__(self) -> str:
        return f"Message({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def translated(self) -> str:
        return gettext(self.msgid, **self.params)
