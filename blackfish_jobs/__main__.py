"""``python -m blackfish_jobs`` runs the CLI (same as the ``bfjobs`` console script)."""

from .entry import run

run()
