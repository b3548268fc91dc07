"""protected land and zoning layers: versioned layers and their features, layer columns on flags,
protected-land flags of register polygons

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-14 09:00:00

Issue 20, item 4 (gmsense.geo.layers): ``layer_versions`` (one row per version of a named layer:
kind, content digest, feature count, geodesic area, source file, valid_from / valid_to) and
``layer_features`` (its polygons in EPSG:4326 with their properties); on ``flags`` the layer a
``protected_land`` flag was checked against (``layer_name``, ``layer_kind``, ``layer_version``) and
the overlapping area ``overlap_m2`` (NULL for every other rule); ``register_layer_flags``, the
register polygons overlapping a layer (recomputed when the register or a layer changes), with
the polygon's division codes for scopes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "layer_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("change", sa.String(length=20), nullable=False),
        sa.Column("source_file", sa.Text(), nullable=True),
        sa.Column("valid_from", sa.DateTime(), nullable=False),
        sa.Column("valid_to", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_index("ix_layer_versions_name", "layer_versions", ["name"], unique=False)
    op.create_table(
        "layer_features",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("feature_index", sa.Integer(), nullable=False),
        sa.Column("geometry_wkt", sa.Text(), nullable=False),
        sa.Column("attrs", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["layer_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_layer_features_version_id", "layer_features", ["version_id"], unique=False)
    op.add_column("flags", sa.Column("layer_name", sa.String(length=120), nullable=True))
    op.add_column("flags", sa.Column("layer_kind", sa.String(length=60), nullable=True))
    op.add_column("flags", sa.Column("layer_version", sa.Integer(), nullable=True))
    op.add_column("flags", sa.Column("overlap_m2", sa.Float(), nullable=True))
    op.create_index("ix_flags_layer_kind", "flags", ["layer_kind"], unique=False)
    op.create_table(
        "register_layer_flags",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("register_id", sa.String(length=200), nullable=False),
        sa.Column("layer_name", sa.String(length=120), nullable=False),
        sa.Column("layer_kind", sa.String(length=60), nullable=False),
        sa.Column("layer_version", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(length=20), nullable=False),
        sa.Column("overlap_m2", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.Column("province_code", sa.String(length=6), nullable=True),
        sa.Column("city_code", sa.String(length=6), nullable=True),
        sa.Column("county_code", sa.String(length=6), nullable=True),
        sa.ForeignKeyConstraint(["register_id"], ["register_polygons.register_id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("register_id", "layer_name"),
    )
    for column in ("register_id", "layer_kind", "province_code", "city_code", "county_code"):
        op.create_index(f"ix_register_layer_flags_{column}", "register_layer_flags", [column], unique=False)


def downgrade() -> None:
    for column in ("register_id", "layer_kind", "province_code", "city_code", "county_code"):
        op.drop_index(f"ix_register_layer_flags_{column}", table_name="register_layer_flags")
    op.drop_table("register_layer_flags")
    with op.batch_alter_table("flags", schema=None) as batch_op:
        batch_op.drop_index("ix_flags_layer_kind")
        for column in ("overlap_m2", "layer_version", "layer_kind", "layer_name"):
            batch_op.drop_column(column)
    op.drop_index("ix_layer_features_version_id", table_name="layer_features")
    op.drop_table("layer_features")
    op.drop_index("ix_layer_versions_name", table_name="layer_versions")
    op.drop_table("layer_versions")
