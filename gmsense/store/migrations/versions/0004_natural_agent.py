"""natural agent: a natural patch names the agent that explains it (fire, flood, windthrow, dieback, harvest, drought)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 18:30:00

Patches labelled ``natural`` carry the agent whose signature was measured in them
(gmsense.classify.trust); every other patch leaves it empty. Older patches keep NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("patches", sa.Column("natural_agent", sa.String(length=20), nullable=True))


def downgrade() -> None:
    op.drop_column("patches", "natural_agent")
