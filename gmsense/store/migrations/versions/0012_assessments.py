"""third-party assessments: signed assessments of a licence or a flag, and their attachments

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-15 09:00:00

Issue 20, item 5 (gmsense.review.assessments). ``assessments``: an assessor's assessment of a
licence or of a flag (the target, the author, the time in UTC, the verdict and the text), numbered
``seq`` from 1 without gaps, with the SHA-256 ``digest`` of its canonical serialisation, the
HMAC-SHA256 ``signature`` of the deployment's key and that key's ``key_id``, and the division codes
of its licence (copied, so scopes filter in SQL). ``assessment_attachments``: its files in order
(sanitised name, the media type the content proved to be, size, SHA-256, the bytes).

Both are audit logs guarded as ``reviews`` is (0002, 0003, 0010): rows are never deleted, replaced
(SQLite) or truncated (PostgreSQL), and never changed, except an assessment's three division codes,
which follow its licence into a new jurisdiction as the licence's flags do (they are not signed).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: The columns of ``assessments`` no UPDATE may touch: all but the division codes.
_SIGNED = ("id", "seq", "target_kind", "site_id", "flag_id", "user_id", "username", "created_at", "verdict", "text",
           "digest", "signature", "key_id")
_CODES = ("province_code", "city_code", "county_code")
_MESSAGE = "the {table} table is an audit log: rows are never changed or deleted"


def upgrade() -> None:
    op.create_table(
        "assessments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("target_kind", sa.String(length=10), nullable=False),
        sa.Column("site_id", sa.String(length=200), nullable=False),
        sa.Column("flag_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("verdict", sa.String(length=20), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("province_code", sa.String(length=6), nullable=True),
        sa.Column("city_code", sa.String(length=6), nullable=True),
        sa.Column("county_code", sa.String(length=6), nullable=True),
        sa.CheckConstraint("(target_kind = 'licence' AND flag_id IS NULL) OR "
                           "(target_kind = 'flag' AND flag_id IS NOT NULL)", name="ck_assessments_target"),
        sa.ForeignKeyConstraint(["flag_id"], ["flags.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.site_id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq"),
    )
    for column in ("site_id", "flag_id", *_CODES):
        op.create_index(f"ix_assessments_{column}", "assessments", [column], unique=False)
    op.create_table(
        "assessment_attachments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("assessment_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["assessment_id"], ["assessments.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("assessment_id", "position"),
    )
    op.create_index("ix_assessment_attachments_assessment_id", "assessment_attachments", ["assessment_id"],
                    unique=False)
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _sqlite_guards()
    elif dialect == "postgresql":
        _postgres_guards()


def _sqlite_guards() -> None:
    for table, update_of, unique in (("assessments", f" OF {', '.join(_SIGNED)}", "id = NEW.id OR seq = NEW.seq"),
                                     ("assessment_attachments", "", "id = NEW.id")):
        message = _MESSAGE.format(table=table)
        for action, columns in (("UPDATE", update_of), ("DELETE", "")):
            op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action}{columns} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
        op.execute(f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
                   f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {unique}) "
                   f"BEGIN SELECT RAISE(ABORT, '{message}'); END")


def _postgres_guards() -> None:
    # An assessment's row may change in its division codes only: the rest, as JSON, must stay equal.
    unsigned = " - ".join(f"'{c}'" for c in _CODES)
    op.execute("CREATE FUNCTION assessments_append_only() RETURNS trigger AS $$ BEGIN "
               "IF TG_OP = 'UPDATE' AND (to_jsonb(NEW) - " + unsigned + ") = (to_jsonb(OLD) - " + unsigned + ") "
               "THEN RETURN NEW; END IF; "
               f"RAISE EXCEPTION '{_MESSAGE.format(table='assessments')}'; END $$ LANGUAGE plpgsql")
    op.execute("CREATE FUNCTION assessment_attachments_append_only() RETURNS trigger AS $$ BEGIN "
               f"RAISE EXCEPTION '{_MESSAGE.format(table='assessment_attachments')}'; END $$ LANGUAGE plpgsql")
    for table in ("assessments", "assessment_attachments"):
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in ("assessment_attachments", "assessments"):
        if dialect == "sqlite":
            for name in ("update", "delete", "replace"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{name}")
        elif dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
    op.drop_index("ix_assessment_attachments_assessment_id", table_name="assessment_attachments")
    op.drop_table("assessment_attachments")
    for column in ("site_id", "flag_id", *_CODES):
        op.drop_index(f"ix_assessments_{column}", table_name="assessments")
    op.drop_table("assessments")
