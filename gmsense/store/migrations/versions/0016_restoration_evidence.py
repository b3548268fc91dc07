"""restoration evidence: per polygon and year, the share observed, the reference's source and the soil NDVI

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-20 09:00:00

Issue 19 (gmsense.restoration.reference): a year without a clear composite over a polygon takes its
status from the observed years around it, so ``restoration_status`` records how much of the polygon
was observed (``observed_share``; 0: the status is carried), where its reference came from
(``reference_source``: the ring near each pixel, of its land cover, or a land-cover reference in the
region for a pit without a vegetated ring; ``+pre_damage`` when its own ground before damage
calibrates it) and the bare-ground NDVI its cover was measured from (``soil_ndvi``). Older rows keep
NULL (read as observed, source unrecorded). Chained to 0011 on the mines branch; re-chained at merge.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("restoration_status", sa.Column("observed_share", sa.Float(), nullable=True))
    op.add_column("restoration_status", sa.Column("reference_source", sa.String(length=40), nullable=True))
    op.add_column("restoration_status", sa.Column("soil_ndvi", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("restoration_status", schema=None) as batch_op:
        for column in ("soil_ndvi", "reference_source", "observed_share"):
            batch_op.drop_column(column)
