"""The one error type of the fees area: every refusal a treasurer may see."""

from flask_babel import gettext


class FeeError(Exception):
    """A rule of the fees area refused the request; the message says why, for people."""


class OcrFileError(FeeError):
    """An OCR giro file that cannot be imported: malformed, inconsistent or a repeat.

    `line` (1-based) and `record` (the 80-character record) point at what failed,
    when one line is to blame.
    """

    def __init__(self, message: str, line: int | None = None, record: str | None = None):
        super().__init__(message)
        self.reason = message
        self.line = line
        self.record = record
        # Worded now, in the language the reason was made in (the request's, or the
        # CLI's English), not in whatever locale is current when it is printed.
        self._text = (
            message
            if line is None
            else gettext("line %(line)s: %(reason)s", line=line, reason=message)
        )

    def __str__(self) -> str:
        return self._text


class DuplicateTransmissionError(OcrFileError):
    """The same transmission (by number or by content) was imported before."""
