"""Alembic environment for bfjobs' own tables (run programmatically by ``store.schema.upgrade``)."""

from alembic import context

from blackfish_jobs.constants import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table=VERSION_TABLE,  # never Blackfish's ddl_version
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables instead
)
with context.begin_transaction():
    context.run_migrations()
