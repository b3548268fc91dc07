"""audit guards: the decision log cannot be replaced or truncated, a flag's status only follows a decision

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00

- SQLite: ``INSERT OR REPLACE`` into reviews deleted the old row without firing the DELETE trigger
  (the store also turns ``recursive_triggers`` on for every connection); a BEFORE INSERT trigger
  now refuses any insert whose id already exists.
- PostgreSQL: TRUNCATE of reviews is refused by a statement trigger.
- Both: a flag's status may change only to the decision of its newest review row, recorded from
  the status it has now (the review app writes that row first, in the same transaction), and a
  new flag starts ``open``.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_APPEND_ONLY = "the reviews table is an audit log: rows are never changed or deleted"
_STATUS = ("a flag's status changes only with a review decision (the review app records who decided, "
           "when and why): write the reviews row first, in the same transaction")
_NEW_FLAG = "a new flag starts open; its status changes only with a review decision"
# The newest review of the flag decided this status, from the status the flag has now.
_LATEST = ("SELECT 1 FROM reviews r WHERE r.id = (SELECT max(id) FROM reviews WHERE flag_id = {new}.id) "
           "AND r.decision = {new}.status AND r.previous_status = {old}.status")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    status = _STATUS.replace("'", "''")
    if dialect == "sqlite":
        op.execute("CREATE TRIGGER reviews_no_replace BEFORE INSERT ON reviews "
                   "WHEN EXISTS (SELECT 1 FROM reviews WHERE id = NEW.id) "
                   f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END")
        op.execute("CREATE TRIGGER flags_status_by_review BEFORE UPDATE OF status ON flags "
                   f"WHEN NEW.status IS NOT OLD.status AND NOT EXISTS ({_LATEST.format(new='NEW', old='OLD')}) "
                   f"BEGIN SELECT RAISE(ABORT, '{status}'); END")
        op.execute("CREATE TRIGGER flags_start_open BEFORE INSERT ON flags WHEN NEW.status IS NOT 'open' "
                   f"BEGIN SELECT RAISE(ABORT, '{_NEW_FLAG}'); END")
    elif dialect == "postgresql":
        op.execute("CREATE TRIGGER reviews_no_truncate BEFORE TRUNCATE ON reviews "
                   "FOR EACH STATEMENT EXECUTE FUNCTION reviews_append_only()")
        op.execute(f"CREATE FUNCTION flags_status_by_review() RETURNS trigger AS $$ BEGIN "
                   f"IF TG_OP = 'INSERT' THEN "
                   f"IF NEW.status IS DISTINCT FROM 'open' THEN RAISE EXCEPTION '{_NEW_FLAG}'; END IF; "
                   f"ELSIF NEW.status IS DISTINCT FROM OLD.status "
                   f"AND NOT EXISTS ({_LATEST.format(new='NEW', old='OLD')}) THEN "
                   f"RAISE EXCEPTION '{status}'; END IF; "
                   f"RETURN NEW; END $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER flags_status_by_review BEFORE INSERT OR UPDATE OF status ON flags "
                   "FOR EACH ROW EXECUTE FUNCTION flags_status_by_review()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("flags_start_open", "flags_status_by_review", "reviews_no_replace"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS flags_status_by_review ON flags")
        op.execute("DROP FUNCTION IF EXISTS flags_status_by_review()")
        op.execute("DROP TRIGGER IF EXISTS reviews_no_truncate ON reviews")
