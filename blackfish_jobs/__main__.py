"""``python -m blackfish_jobs`` runs the CLI (same as the ``bfjobs`` console script)."""

from .cli import main

main()
