"""jurisdictions: division codes on licences, flags, register polygons and licence versions; user scopes

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-12 09:00:00

Issue 20: ``province_code``, ``city_code``, ``county_code`` (6-digit codes of gmsense.geo.divisions,
NULL where the attributes name no division the shipped table knows) on ``sites``, ``flags`` (copied
from the licence), ``register_polygons`` and ``licence_versions``; filled here from the stored
attributes. ``users.scope_kind`` (province | city | county | licence; every existing user keeps
seeing everything: province) and ``user_scope_codes`` (the codes or licence ids of a scope).
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

CODED = ("sites", "flags", "register_polygons", "licence_versions")
LEVELS = ("province", "city", "county")


def upgrade() -> None:
    for table in CODED:
        for level in LEVELS:
            op.add_column(table, sa.Column(f"{level}_code", sa.String(length=6), nullable=True))
            op.create_index(f"ix_{table}_{level}_code", table, [f"{level}_code"], unique=False)
    op.add_column("users", sa.Column("scope_kind", sa.String(length=10), server_default="province",
                                     nullable=False))
    op.create_table(
        "user_scope_codes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "code"),
    )
    op.create_index("ix_user_scope_codes_user_id", "user_scope_codes", ["user_id"], unique=False)
    _fill()


def _fill() -> None:
    """Codes of the rows already stored, from their attributes (flags from their licence)."""
    from gmsense.geo.divisions import divisions_of

    bind = op.get_bind()
    for table, key in (("sites", "site_id"), ("register_polygons", "register_id"), ("licence_versions", "id")):
        rows = bind.execute(sa.text(f"SELECT {key}, attrs FROM {table}")).all()
        for ident, attrs in rows:
            attrs = json.loads(attrs) if isinstance(attrs, str) else (attrs or {})
            codes = divisions_of(attrs)
            if any(codes.values()):
                bind.execute(sa.text(f"UPDATE {table} SET province_code = :province_code, city_code = :city_code, "
                                     f"county_code = :county_code WHERE {key} = :ident"), {**codes, "ident": ident})
    for level in LEVELS:
        bind.execute(sa.text(f"UPDATE flags SET {level}_code = (SELECT sites.{level}_code FROM sites "
                             "WHERE sites.site_id = flags.site_id)"))


def downgrade() -> None:
    op.drop_index("ix_user_scope_codes_user_id", table_name="user_scope_codes")
    op.drop_table("user_scope_codes")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("scope_kind")
    for table in CODED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            for level in LEVELS:
                batch_op.drop_index(f"ix_{table}_{level}_code")
                batch_op.drop_column(f"{level}_code")
