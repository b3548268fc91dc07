"""county boundaries: the divisions of polygons whose attributes name none come from their geometry

Revision ID: 0014
Revises: 0013
Create Date: 2027-01-10 09:00:00

Issue 20 (gmsense.geo.county_boundaries, ``gmsense divisions import``): ``division_boundaries``, one
row per county of the shipped division table: its boundary in EPSG:4326, its geodesic area, its city
and province codes, how many features of the file it merges, their properties, the file and when.
Written on a branch whose chain ended at 0011; revisions 0012 and 0013 were written in parallel on
other branches, so this one is re-chained onto 0013 when they are merged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "division_boundaries",
        sa.Column("county_code", sa.String(length=6), nullable=False),
        sa.Column("city_code", sa.String(length=6), nullable=True),
        sa.Column("province_code", sa.String(length=6), nullable=True),
        sa.Column("geometry_wkt", sa.Text(), nullable=False),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("attrs", sa.JSON(), nullable=False),
        sa.Column("source_file", sa.Text(), nullable=True),
        sa.Column("imported_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("county_code"),
    )
    op.create_index("ix_division_boundaries_city_code", "division_boundaries", ["city_code"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_division_boundaries_city_code", table_name="division_boundaries")
    op.drop_table("division_boundaries")
