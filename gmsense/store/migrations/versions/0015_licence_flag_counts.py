"""licence flag counts: the dashboard's flags per licence kept by the database as flags are written

Revision ID: 0015
Revises: 0014
Create Date: 2027-01-20 09:00:00

Issue 20, item 6 (``gmsense bench queue``: the province dashboard at 100,000 flags). The dashboard
counted every flag of its scope per licence at every request (one GROUP BY over the flags, ~100 ms
province-wide). ``licence_flag_counts`` keeps those counts, one row per licence that ever had a flag
(gmsense.outputs.summary_report.FLAG_COUNTS: all flags, by status, the reclamation_overdue ones, the
severity score of the open and confirmed ones, the confirmed violations). Database triggers on
``flags`` keep it, in the statement (and so the transaction) that inserts, deletes or changes a
flag's status, licence, severity or rule: every writer (scans, decisions, stage signatures, bulk
loads) is counted, and a decision shows on the next page. Filled here from the flags already stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COUNTERS = ("flags", "open", "confirmed", "dismissed", "overdue", "score", "violations")
_WEIGHT = "CASE {r}.severity WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 WHEN 'info' THEN 1 ELSE 0 END"


def _terms(row: str) -> dict[str, str]:
    """What one flag (``row``: NEW, OLD or flags) adds to each counter of its licence."""
    def one(condition: str) -> str:
        return f"CASE WHEN {condition} THEN 1 ELSE 0 END"

    return {"flags": "1", "open": one(f"{row}.status = 'open'"), "confirmed": one(f"{row}.status = 'confirmed'"),
            "dismissed": one(f"{row}.status = 'dismissed'"), "overdue": one(f"{row}.rule = 'reclamation_overdue'"),
            "score": f"CASE WHEN {row}.status IN ('open', 'confirmed') THEN {_WEIGHT.format(r=row)} ELSE 0 END",
            "violations": one(f"{row}.status = 'confirmed' AND {row}.rule <> 'new_disturbance'")}


def _apply(row: str, sign: str) -> list[str]:
    """Statements adding (``sign`` +) or taking away (-) the flag ``row`` from its licence's counts."""
    terms = _terms(row)
    zeros = ", ".join("0" for _ in COUNTERS)
    sets = ", ".join(f"{c} = {c} {sign} ({terms[c]})" for c in COUNTERS)
    return [f"INSERT INTO licence_flag_counts (site_id, {', '.join(COUNTERS)}) VALUES ({row}.site_id, {zeros}) "
            "ON CONFLICT (site_id) DO NOTHING",
            f"UPDATE licence_flag_counts SET {sets} WHERE site_id = {row}.site_id"]


#: The columns whose change moves a flag between counters (or licences).
_WATCHED = "status, site_id, severity, rule"


def upgrade() -> None:
    op.create_table(
        "licence_flag_counts",
        sa.Column("site_id", sa.String(length=200), nullable=False),
        *(sa.Column(c, sa.Integer(), nullable=False) for c in COUNTERS),
        sa.PrimaryKeyConstraint("site_id"),
    )
    terms = _terms("flags")
    op.execute(f"INSERT INTO licence_flag_counts (site_id, {', '.join(COUNTERS)}) "
               f"SELECT site_id, {', '.join(f'SUM({terms[c]})' for c in COUNTERS)} FROM flags GROUP BY site_id")
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name, event, body in (("insert", "INSERT", _apply("NEW", "+")),
                                  ("update", f"UPDATE OF {_WATCHED}", _apply("OLD", "-") + _apply("NEW", "+")),
                                  ("delete", "DELETE", _apply("OLD", "-"))):
            op.execute(f"CREATE TRIGGER licence_flag_counts_{name} AFTER {event} ON flags "
                       f"BEGIN {'; '.join(body)}; END")
    elif dialect == "postgresql":
        op.execute("CREATE FUNCTION licence_flag_counts_keep() RETURNS trigger AS $$ BEGIN "
                   "IF TG_OP IN ('UPDATE', 'DELETE') THEN "
                   f"{'; '.join(_apply('OLD', '-'))}; END IF; "
                   "IF TG_OP IN ('INSERT', 'UPDATE') THEN "
                   f"{'; '.join(_apply('NEW', '+'))}; END IF; "
                   "RETURN NULL; END $$ LANGUAGE plpgsql")
        op.execute(f"CREATE TRIGGER licence_flag_counts_keep AFTER INSERT OR DELETE OR UPDATE OF {_WATCHED} "
                   "ON flags FOR EACH ROW EXECUTE FUNCTION licence_flag_counts_keep()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("delete", "update", "insert"):
            op.execute(f"DROP TRIGGER IF EXISTS licence_flag_counts_{name}")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS licence_flag_counts_keep ON flags")
        op.execute("DROP FUNCTION IF EXISTS licence_flag_counts_keep()")
    op.drop_table("licence_flag_counts")
