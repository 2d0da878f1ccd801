"""Brønnøysund's bulk download, streamed: about 1.1 million units, several GB unpacked.

The file (`enheter_alle.json.gz`, or `underenheter_alle.json.gz`) is one JSON array. It is
read unit by unit with ijson in bounded memory, and only the units that matter become
records: those whose organisation number we already have (to update them), and, when
asked, live units in the chosen municipalities (to add them as prospects). Every other
unit is counted and passed over without further work, so the import costs little more
than the parse itself. The records then go through the same planning as any import:
all or nothing, nothing written while any relevant unit has an error.
"""

import gzip
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import ijson

from crm.bulk import paused_gc
from crm.extensions import db
from crm.members.importing.brreg import unit_record
from crm.members.importing.messages import N_, Message
from crm.members.importing.records import ParsedFile
from crm.members.models import Company

# A JSON file this large is streamed even when it is not gzip: reading it whole would not fit.
STREAM_ABOVE_BYTES = 64 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
# A unit in one of these states is no prospect, though its record still updates ours.
_ENDED = ("slettedato", "nedleggelsesdato")
_TROUBLED = ("konkurs", "underAvvikling", "underTvangsavviklingEllerTvangsopplosning")

try:  # the C backend is several times faster; the pure-Python one is the fallback
    _ijson = ijson.get_backend("yajl2_c")
except ImportError:  # pragma: no cover - wheels ship the C backend
    _ijson = ijson


@dataclass
class StreamCounts:
    units: int = 0  # every unit in the file
    relevant: int = 0  # those that became records


def is_register_stream(path: Path) -> bool:
    """A gzip file, or a JSON array too large to read whole: the bulk download."""
    with path.open("rb") as fh:
        head = fh.read(2)
    if head == GZIP_MAGIC:
        return True
    return path.stat().st_size > STREAM_ABOVE_BYTES


def open_register(raw: BinaryIO) -> BinaryIO:
    """The JSON bytes of an open file, unpacked on the fly when it is gzip."""
    head = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if head == GZIP_MAGIC else raw


def read_register_stream(
    fh: BinaryIO,
    *,
    new_in_municipalities: Collection[str] = (),
    progress: Callable[[int], None] | None = None,
    counts: StreamCounts | None = None,
) -> ParsedFile:
    """The records of the units that matter, from a stream of one JSON array of units.

    `progress` gets the number of units read since its last call (every 10,000 units).
    """
    counts = counts if counts is not None else StreamCounts()
    ours = set(db.session.scalars(db.select(Company.orgnr)))
    wanted = frozenset(new_in_municipalities)
    parsed = ParsedFile(source="brreg")
    step = 0
    try:
        # A million dicts and no reference cycles: the collector would only walk the
        # app's heap again and again (1.57x the bare parse with it, 1.40x without);
        # reference counting frees each unit.
        with paused_gc():
            units = enumerate(_ijson.items(fh, "item"), start=1)
            for index, unit in units:
                counts.units = index
                step += 1
                if step == 10_000:
                    if progress:
                        progress(step)
                    step = 0
                if not isinstance(unit, dict):
                    continue
                orgnr = unit.get("organisasjonsnummer")
                if orgnr in ours or (wanted and _new_prospect(unit, wanted)):
                    parsed.records.append(unit_record(0, index, unit))
    except (ijson.JSONError, ValueError) as exc:
        parsed.records.clear()
        parsed.error(
            Message(
                N_("The file is not valid JSON after unit %(unit)s: %(reason)s."),
                unit=counts.units,
                reason=str(exc)[:200],
            )
        )
    except (EOFError, OSError, zlib.error) as exc:  # truncated or corrupt gzip
        parsed.records.clear()
        parsed.error(
            Message(
                N_("The file ends or breaks after unit %(unit)s: %(reason)s."),
                unit=counts.units,
                reason=str(exc)[:200],
            )
        )
    if progress and step:
        progress(step)
    counts.relevant = len(parsed.records)
    if not parsed.errors and not counts.units:
        parsed.warning(Message(N_("The file has no companies.")))
    return parsed


def _new_prospect(unit: dict, municipalities: frozenset[str]) -> bool:
    """A live, untroubled unit located in one of `municipalities`."""
    address = unit.get("forretningsadresse") or unit.get("beliggenhetsadresse")
    if not isinstance(address, dict) or address.get("kommunenummer") not in municipalities:
        return False
    return not any(unit.get(key) for key in _ENDED + _TROUBLED)
