"""restoration: the register of mine land, demonstration zones, restoration runs and status per year

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00

Issue 19: abandoned / legacy mine land is a register of polygons (``register_polygons``) whose
restoration status per year (``restoration_status``) a run over annual composites writes
(``restoration_runs`` records which imagery and thresholds). Demonstration zones
(``demonstration_zones``) may set their own target rate. Nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "register_polygons",
        sa.Column("register_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("geometry_wkt", sa.Text(), nullable=False),
        sa.Column("local_wkt", sa.Text(), nullable=False),
        sa.Column("local_crs", sa.Text(), nullable=False),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("attrs", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("register_id"),
    )
    op.create_table(
        "demonstration_zones",
        sa.Column("zone_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("target_rate", sa.Float(), nullable=True),
        sa.Column("geometry_wkt", sa.Text(), nullable=False),
        sa.Column("attrs", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("zone_id"),
    )
    op.create_table(
        "restoration_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("imagery", sa.Text(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("gmsense_version", sa.String(length=50), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "restoration_status",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("register_id", sa.String(length=200), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=True),
        sa.Column("events", sa.String(length=40), nullable=False),
        sa.Column("polygon_ndvi", sa.Float(), nullable=True),
        sa.Column("reference_ndvi", sa.Float(), nullable=True),
        sa.Column("ratio", sa.Float(), nullable=True),
        sa.Column("restored_share", sa.Float(), nullable=True),
        sa.Column("n_pixels", sa.Integer(), nullable=False),
        sa.Column("n_reference", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Text(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["register_id"], ["register_polygons.register_id"]),
        sa.ForeignKeyConstraint(["run_id"], ["restoration_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("register_id", "year"),
    )
    with op.batch_alter_table("restoration_status", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_restoration_status_register_id"), ["register_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("restoration_status", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_restoration_status_register_id"))
    op.drop_table("restoration_status")
    op.drop_table("restoration_runs")
    op.drop_table("demonstration_zones")
    op.drop_table("register_polygons")
