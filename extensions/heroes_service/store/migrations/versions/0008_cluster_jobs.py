"""Cluster jobs: one table for the service's non-workflow Slurm jobs (JupyterLab servers, kernels, desktops)
and the usage ledger of every kind (allocated TRES, elapsed, energy, cost, the prediction made).

Revision ID: 0008_cluster_jobs
Revises: 0007_step_peak_memory
"""
from alembic import op
import sqlalchemy as sa

revision = "0008_cluster_jobs"
down_revision = "0007_step_peak_memory"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False, index=True),
        sa.Column("cluster_id", sa.String(36), nullable=False, index=True),
        sa.Column("cluster", sa.String(63), nullable=False, server_default=""),
        sa.Column("organization", sa.String(63), nullable=False, index=True),
        sa.Column("username", sa.String(255), nullable=False, index=True),
        sa.Column("cluster_login", sa.String(32), nullable=False, server_default=""),
        sa.Column("ref", sa.String(255), nullable=False, server_default="", index=True),
        sa.Column("job_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("job_id", sa.String(32), nullable=True, index=True),
        sa.Column("state", sa.String(32), nullable=False, index=True),
        sa.Column("reason", sa.String(255), nullable=False, server_default=""),
        sa.Column("node", sa.String(255), nullable=False, server_default=""),
        sa.Column("node_addr", sa.String(255), nullable=False, server_default=""),
        sa.Column("resources", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("missing_cycles", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("alloc_tres", sa.String(500), nullable=False, server_default=""),
        sa.Column("elapsed_s", sa.Integer, nullable=True),
        sa.Column("energy_j", sa.Float, nullable=True),
        sa.Column("cost", sa.Float, nullable=True),
        sa.Column("currency", sa.String(8), nullable=False, server_default=""),
        sa.Column("prediction", sa.JSON, nullable=True),
        sa.Column("ledger_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("cluster_jobs")
