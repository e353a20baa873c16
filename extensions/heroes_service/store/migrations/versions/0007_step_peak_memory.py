"""Workflows: each step's measured peak memory (the largest MaxRSS of its Slurm steps, MiB).

Revision ID: 0007_step_peak_memory
Revises: 0006_decision_history
"""
from alembic import op
import sqlalchemy as sa

revision = "0007_step_peak_memory"
down_revision = "0006_decision_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_steps") as batch:
        batch.add_column(sa.Column("max_rss_mb", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflow_steps") as batch:
        batch.drop_column("max_rss_mb")
