"""bfjobs' job store: one SQLite implementation of every query, the schema owned by migrations.

- :mod:`.rows`: :class:`JobRow` and its values as stored.
- :mod:`.jobs`: :class:`Database`, every query on the stdlib ``sqlite3`` module (fast commands),
  and :func:`slurm_unfinished`, which ``status`` runs before its ``sacct`` call.
- :mod:`.schema`: URLs (SQLite only, as Blackfish), connections, Alembic ``migrations/``.
- :mod:`.blackfish`: Blackfish's ``model`` table through SQLAlchemy (import it explicitly: it
  imports SQLAlchemy, which nothing else here does).
"""

from .jobs import Database, slurm_unfinished
from .rows import JobRow, utcnow
from .schema import at_head, connect, sqlite_path

__all__ = ["Database", "JobRow", "at_head", "connect", "slurm_unfinished", "sqlite_path", "utcnow"]
