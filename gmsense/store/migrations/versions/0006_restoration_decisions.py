"""restoration decisions: reviewers confirm or reject a register polygon's status change (append-only)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:00:00

Issue 19: the review app queues register polygons whose status changed in the latest analysed
year (became restored, reverted, or passed their restoration deadline without being restored);
a reviewer confirms or rejects each change with a reason. ``restoration_decisions`` is an audit
log guarded as ``reviews`` is (0002, 0003): rows are never changed or deleted (nor replaced on
SQLite, nor truncated on PostgreSQL); a changed decision is a new row whose ``previous_status`` is
the change's status then. Nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_APPEND_ONLY = "the restoration_decisions table is an audit log: rows are never changed or deleted"


def upgrade() -> None:
    op.create_table(
        "restoration_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("register_id", sa.String(length=200), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=80), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("previous_status", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(["register_id"], ["register_polygons.register_id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("restoration_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_restoration_decisions_register_id"), ["register_id"], unique=False)
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER restoration_decisions_no_{action.lower()} BEFORE {action} "
                       f"ON restoration_decisions BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END")
        op.execute("CREATE TRIGGER restoration_decisions_no_replace BEFORE INSERT ON restoration_decisions "
                   "WHEN EXISTS (SELECT 1 FROM restoration_decisions WHERE id = NEW.id) "
                   f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END")
    elif dialect == "postgresql":
        op.execute(f"CREATE FUNCTION restoration_decisions_append_only() RETURNS trigger AS $$ BEGIN "
                   f"RAISE EXCEPTION '{_APPEND_ONLY}'; END $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER restoration_decisions_append_only BEFORE UPDATE OR DELETE ON restoration_decisions "
                   "FOR EACH ROW EXECUTE FUNCTION restoration_decisions_append_only()")
        op.execute("CREATE TRIGGER restoration_decisions_no_truncate BEFORE TRUNCATE ON restoration_decisions "
                   "FOR EACH STATEMENT EXECUTE FUNCTION restoration_decisions_append_only()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("update", "delete", "replace"):
            op.execute(f"DROP TRIGGER IF EXISTS restoration_decisions_no_{name}")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS restoration_decisions_no_truncate ON restoration_decisions")
        op.execute("DROP TRIGGER IF EXISTS restoration_decisions_append_only ON restoration_decisions")
        op.execute("DROP FUNCTION IF EXISTS restoration_decisions_append_only()")
    with op.batch_alter_table("restoration_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_restoration_decisions_register_id"))
    op.drop_table("restoration_decisions")
