"""escalation and notifications: the stage log of each flag's chain, digests sent, users' e-mail

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-13 09:00:00

Issue 20, items 2 and 3. ``escalation_events``: every action on a stage of a flag's escalation
chain (sign or return, who, when, the reason, the chain the flag travels, and the stage that is
pending after it with its level, role and deadline), numbered per flag (``seq``, unique with the flag:
two people acting on the same state cannot both be recorded). ``digests``: the digests sent to
each user (when, what they counted), so the next one lists what is new since. Both are audit logs
guarded as ``reviews`` is (0002, 0003, 0006): rows are never changed or deleted (nor replaced on
SQLite, nor truncated on PostgreSQL). ``users.email``: where a user's digest goes (NULL: none).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LOGS = ("escalation_events", "digests")


def upgrade() -> None:
    op.create_table(
        "escalation_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("flag_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=80), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("chain", sa.JSON(), nullable=False),
        sa.Column("next_stage", sa.Integer(), nullable=True),
        sa.Column("next_level", sa.String(length=10), nullable=True),
        sa.Column("next_role", sa.String(length=20), nullable=True),
        sa.Column("next_due_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["flag_id"], ["flags.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("flag_id", "seq"),
    )
    op.create_index("ix_escalation_events_flag_id", "escalation_events", ["flag_id"], unique=False)
    op.create_table(
        "digests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("new_flags", sa.Integer(), nullable=False),
        sa.Column("awaiting", sa.Integer(), nullable=False),
        sa.Column("overdue", sa.Integer(), nullable=False),
        sa.Column("channels", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_digests_user_id", "digests", ["user_id"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email", sa.String(length=254), nullable=True))
    dialect = op.get_bind().dialect.name
    for table in LOGS:
        message = f"the {table} table is an audit log: rows are never changed or deleted"
        if dialect == "sqlite":
            for action in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
            op.execute(f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
                       f"WHEN EXISTS (SELECT 1 FROM {table} WHERE id = NEW.id) "
                       f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
        elif dialect == "postgresql":
            op.execute(f"CREATE FUNCTION {table}_append_only() RETURNS trigger AS $$ BEGIN "
                       f"RAISE EXCEPTION '{message}'; END $$ LANGUAGE plpgsql")
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in LOGS:
        if dialect == "sqlite":
            for name in ("update", "delete", "replace"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{name}")
        elif dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("email")
    op.drop_index("ix_digests_user_id", table_name="digests")
    op.drop_table("digests")
    op.drop_index("ix_escalation_events_flag_id", table_name="escalation_events")
    op.drop_table("escalation_events")
