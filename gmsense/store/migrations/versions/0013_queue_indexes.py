"""queue indexes: the queue's order read from an index; the review app's scan stamp

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 09:00:00

Issue 20, item 6 (``gmsense bench queue``). ``ix_flags_queue_order`` on flags (severity, created_at,
id): the review queue's order (most severe first, then oldest, then by id) is read from it one
severity at a time (gmsense.review.service), instead of sorting every matching flag for each page;
measured with 100,000 flags, a deep page went from a sort of the matching rows (spilled to disk on
PostgreSQL; seconds on SQLite) to an index walk. ``ix_flags_created_at`` (created_at, id): the
oldest flags first, as the dashboard lists the stages pending since a flag was stored
(gmsense.review.escalation.pending_stages: 71 ms to 0.7 ms), and the queue's date filters.
``ix_sites_updated_at`` and
``ix_scan_units_finished_at``: the maxima that make the review app's scan stamp (gmsense.review.cache),
checked at every dashboard and queue page, read from an index instead of a pass over the tables.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_flags_queue_order", "flags", ["severity", "created_at", "id"], unique=False)
    op.create_index("ix_flags_created_at", "flags", ["created_at", "id"], unique=False)
    op.create_index("ix_sites_updated_at", "sites", ["updated_at"], unique=False)
    op.create_index("ix_scan_units_finished_at", "scan_units", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_scan_units_finished_at", table_name="scan_units")
    op.drop_index("ix_sites_updated_at", table_name="sites")
    op.drop_index("ix_flags_created_at", table_name="flags")
    op.drop_index("ix_flags_queue_order", table_name="flags")
