"""Visualization: desktop sessions (a VNC server in a Slurm job), view-only share links, one-time connect tickets.

Revision ID: 0009_visualization
Revises: 0008_cluster_jobs
"""
from alembic import op
import sqlalchemy as sa

revision = "0009_visualization"
down_revision = "0008_cluster_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "visualization_sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("organization", sa.String(63), nullable=False, index=True),
        sa.Column("username", sa.String(255), nullable=False, index=True),
        sa.Column("cluster_id", sa.String(36), nullable=False, index=True),
        sa.Column("cluster_name", sa.String(63), nullable=False),
        sa.Column("cluster_login", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("state", sa.String(32), nullable=False, index=True),
        sa.Column("reason", sa.String(255), nullable=False, server_default=""),
        sa.Column("end_reason", sa.String(64), nullable=False, server_default=""),
        sa.Column("partition", sa.String(64), nullable=False, server_default=""),
        sa.Column("cores", sa.Integer, nullable=False),
        sa.Column("memory_mb", sa.Integer, nullable=False),
        sa.Column("minutes", sa.Integer, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False, server_default="0"),
        sa.Column("geometry", sa.String(16), nullable=False),
        sa.Column("work_dir", sa.Text, nullable=False),
        sa.Column("session_dir", sa.Text, nullable=False),
        sa.Column("instance_id", sa.String(32), nullable=True, index=True),
        sa.Column("node", sa.String(255), nullable=False, server_default=""),
        sa.Column("socket_path", sa.Text, nullable=False, server_default=""),
        sa.Column("idle_minutes", sa.Float, nullable=False),
        sa.Column("expected_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_viewer_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "visualization_shares",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("viewer", sa.String(255), nullable=False, server_default=""),
        sa.Column("session_id", sa.String(32), sa.ForeignKey("visualization_sessions.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("organization", sa.String(63), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "visualization_tickets",
        sa.Column("secret_hash", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(32), sa.ForeignKey("visualization_sessions.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("view_only", sa.Boolean, nullable=False),
        sa.Column("share_id", sa.String(32), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("visualization_tickets")
    op.drop_table("visualization_shares")
    op.drop_table("visualization_sessions")
