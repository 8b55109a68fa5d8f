"""One bfjobs job as stored, and its values as SQLite holds them.

Values are stored as bfjobs has always stored them (SQLAlchemy's forms, so databases written by
earlier versions read back unchanged): JSON columns as ``json.dumps(value)`` (``None`` too, as
the text ``null``), datetimes as naive ``YYYY-MM-DD HH:MM:SS.ffffff``.

The columns are :class:`JobRow`'s fields, in table order; the table itself is created only by
the migrations (tests/test_db.py checks the two agree, types included).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any


def utcnow() -> datetime:
    """Naive UTC, as Blackfish stores its timestamps."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class JobRow:
    """One bfjobs job as stored.

    A row read from the store decodes ``request`` (and ``result``) on first use: ``status`` reads
    every live job (10,000 at scale) and needs few requests, and JSON decoding was a third of
    the read (see :func:`from_records`).
    """

    id: str
    kind: str
    profile: str
    backend: str
    native_id: str | None
    state: str
    reason: str | None
    folder: str
    target: str
    request: dict[str, Any]
    result: dict[str, Any] | None
    node: str | None
    user: str | None
    submitted_at: datetime
    ended_at: datetime | None
    updated_at: datetime
    registered_at: datetime | None = None
    location: str | None = None  # "shared" (the profile's cache_dir) or "home" (its home_dir)

    def __getattr__(self, name: str) -> Any:
        """A JSON column not decoded yet (only rows built by :func:`from_records` lack one)."""
        if name in JSON_COLUMNS and _RAW + name in self.__dict__:
            text = self.__dict__.pop(_RAW + name)
            value = self.__dict__[name] = None if text is None or text == "null" else json.loads(text)
            return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


#: ``bfjobs_jobs``' columns in table order.
COLUMNS = tuple(f.name for f in dataclasses.fields(JobRow))
JSON_COLUMNS = frozenset({"request", "result"})
DATETIME_COLUMNS = frozenset({"submitted_at", "ended_at", "updated_at", "registered_at"})

#: Where a row read from the store keeps a JSON column's text until it is first asked for.
_RAW = "_json_"
_KEYS = tuple(_RAW + c if c in JSON_COLUMNS else c for c in COLUMNS)
_DATETIMES = tuple(c for c in COLUMNS if c in DATETIME_COLUMNS)


def to_sql(column: str, value: Any) -> Any:
    """A Python value as stored in ``column`` (JSON text, datetime text)."""
    if column in JSON_COLUMNS:
        return json.dumps(value)
    if column in DATETIME_COLUMNS and value is not None:
        if not isinstance(value, date):
            raise TypeError(f"{column}: SQLite DateTime type only accepts Python datetime and date objects")
        if not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
        )
    return value


def from_records(records: Any) -> list[JobRow]:
    """Rows from ``SELECT <COLUMNS>`` records, without calling ``__init__`` (a measurable share
    of reading 10,000 rows) and with JSON left as text until asked for (see :class:`JobRow`).

    Equal timestamps become one ``datetime`` (an array's elements share their submit time, one
    refresh's rows their ``updated_at``): parsed once, and hashed once where a table converts
    submit times to local time."""
    new, keys = object.__new__, _KEYS
    parsed: dict[str, datetime] = {}

    def parse(text: str) -> datetime:
        value = parsed[text] = datetime.fromisoformat(text)
        return value

    rows = []
    for record in records:
        row = new(JobRow)
        values = row.__dict__
        values.update(zip(keys, record, strict=True))
        for column in _DATETIMES:
            text = values[column]
            if text is not None:
                values[column] = parsed[text] if text in parsed else parse(text)
        rows.append(row)
    return rows
