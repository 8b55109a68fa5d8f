"""bfjobs' job store: one SQLite implementation of every query, the schema owned by migrations.

- :mod:`.rows`: :class:`JobRow` and its values as stored.
- :mod:`.jobs`: :class:`Database`, every query on the stdlib ``sqlite3`` module (fast commands).
- :mod:`.live`: :func:`live_native_ids` and :func:`live_profiles`, which ``status`` runs before
  its ``sacct`` call.
- :mod:`.schema`: URLs (SQLite only, as Blackfish), connections, Alembic ``migrations/``.
- :mod:`.blackfish`: Blackfish's ``model`` table through SQLAlchemy (import it explicitly: it
  imports SQLAlchemy, which nothing else here does).

The names below are loaded when first used (PEP 562): ``status``' entry point reads the live ids
through this package before ``sacct`` starts, and :mod:`.jobs` (dataclasses, JSON) would add
~10 ms there (benchmarks/README.md).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .jobs import Database
    from .live import live_native_ids, live_profiles
    from .rows import JobRow, utcnow
    from .schema import at_head, connect, sqlite_path

_WHERE = {
    "Database": "jobs",
    "JobRow": "rows",
    "utcnow": "rows",
    "live_native_ids": "live",
    "live_profiles": "live",
    "at_head": "schema",
    "connect": "schema",
    "sqlite_path": "schema",
}

__all__ = ["Database", "JobRow", "at_head", "connect", "live_native_ids", "live_profiles", "sqlite_path", "utcnow"]


if not TYPE_CHECKING:  # type checkers see the imports above, and a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
