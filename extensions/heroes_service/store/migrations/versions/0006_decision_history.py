"""Decision: imported job history (SWF traces, sacct dumps), one row per finished job, per organization.

Revision ID: 0006_decision_history
Revises: 0005_energy_bigint_ids
"""
from alembic import op
import sqlalchemy as sa

revision = "0006_decision_history"
down_revision = "0005_energy_bigint_ids"
branch_labels = None
depends_on = None

_MEASURES = ("wait_s", "run_s", "req_time_s", "req_mem_mb", "used_mem_mb", "cores", "nodes", "energy_j")


def upgrade() -> None:
    op.create_table(
        "decision_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("organization", sa.String(63), nullable=False),
        sa.Column("batch", sa.String(32), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("cluster", sa.String(63), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(255), nullable=False, server_default=""),
        sa.Column("partition", sa.String(63), nullable=False, server_default=""),
        sa.Column("state", sa.String(32), nullable=False, server_default=""),
        sa.Column("submit", sa.Float, nullable=False),
        *[sa.Column(name, sa.Float, nullable=True) for name in _MEASURES],
        sa.Column("imported_by", sa.String(255), nullable=False, server_default=""),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("organization", "cluster", "source", "job_id", "submit",
                            name="uq_decision_history_job"),
    )
    op.create_index("ix_decision_history_org_cluster", "decision_history", ["organization", "cluster"])


def downgrade() -> None:
    op.drop_index("ix_decision_history_org_cluster", table_name="decision_history")
    op.drop_table("decision_history")
