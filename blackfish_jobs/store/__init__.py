"""bfjobs' job store: one SQLite implementation of every query, the schema owned by migrations.

- :mod:`.rows`: :class:`JobRow` and its values as stored.
- :mod:`.jobs`: :class:`Database`, every query on the stdlib ``sqlite3`` module (fast commands),
  and :func:`live_native_ids`, which ``status`` runs before its ``sacct`` call.
- :mod:`.schema`: URLs (SQLite only, as Blackfish), connections, Alembic ``migrations/``.
- :mod:`.blackfish`: Blackfish's ``model`` table through SQLAlchemy (import it explicitly: it
  imports SQLAlchemy, which nothing else here does).
"""

from .jobs import Database, live_native_ids, live_profiles
from .rows import JobRow, utcnow
from .schema import at_head, connect, sqlite_path

__all__ = ["Database", "JobRow", "at_head", "connect", "live_native_ids", "live_profiles", "sqlite_path", "utcnow"]
