"""Alembic environment: migrates the connection that gmsense.store hands over."""

from __future__ import annotations

from alembic import context

from gmsense.store import Base, migration_engine

config = context.config


def _run(connection) -> None:
    # The caller's connection is already in a transaction (gmsense.store.migration_engine makes it
    # a real one on SQLite too): every migration and the alembic_version update commit together.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # `alembic -c ...` from a shell, with sqlalchemy.url set
    engine = migration_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
