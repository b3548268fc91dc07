"""licence register: licences with their version history; flags record the version they were checked against

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 09:00:00

Issue 21: ``gmsense licences import`` keeps the licences in the store (gmsense.geo.licences): one row
per version of a licence, ``valid_from`` to ``valid_to`` (NULL for the latest). ``flags`` gains
``licence_version``, the register version a scan checked the flag against (NULL for flags of scans
that read a --sites file, and for every flag written before this revision). Nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "licence_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("licence_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("geometry_wkt", sa.Text(), nullable=False),
        sa.Column("local_wkt", sa.Text(), nullable=False),
        sa.Column("local_crs", sa.Text(), nullable=False),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("attrs", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("change", sa.String(length=20), nullable=False),
        sa.Column("source_file", sa.Text(), nullable=True),
        sa.Column("valid_from", sa.DateTime(), nullable=False),
        sa.Column("valid_to", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("licence_id", "version"),
    )
    with op.batch_alter_table("licence_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_licence_versions_licence_id"), ["licence_id"], unique=False)
    op.add_column("flags", sa.Column("licence_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("flags", "licence_version")
    with op.batch_alter_table("licence_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_licence_versions_licence_id"))
    op.drop_table("licence_versions")
