"""Alembic environment: migrates the connection that gmsense.store hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from gmsense.store import Base

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # `alembic -c ...` from a shell, with sqlalchemy.url set
    with create_engine(config.get_main_option("sqlalchemy.url")).begin() as conn:
        _run(conn)
