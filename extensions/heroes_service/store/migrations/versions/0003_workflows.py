"""Workflow templates, instances, steps and events (issue 4, workflows half).

Revision ID: 0003_workflows
Revises: 0002_clusters
"""
from alembic import op
import sqlalchemy as sa

revision = "0003_workflows"
down_revision = "0002_clusters"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_templates",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("organization", sa.String(63), nullable=False, index=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("title", sa.String(200), nullable=False, server_default=""),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("organization", "name", "version", name="uq_wf_templates_org_name_version"),
    )
    op.create_table(
        "workflow_instances",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("organization", sa.String(63), nullable=False, index=True),
        sa.Column("organization_id", sa.String(36), nullable=False, server_default=""),
        sa.Column("username", sa.String(255), nullable=False, index=True),
        sa.Column("user_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("template_id", sa.String(32), nullable=False, index=True),
        sa.Column("template_name", sa.String(63), nullable=False),
        sa.Column("template_version", sa.Integer, nullable=False),
        sa.Column("cluster_id", sa.String(36), nullable=False, index=True),
        sa.Column("cluster_name", sa.String(63), nullable=False),
        sa.Column("cluster_login", sa.String(32), nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("work_dir", sa.String(600), nullable=False, server_default=""),
        sa.Column("state", sa.String(32), nullable=False, index=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("output_bucket", sa.String(255), nullable=False, server_default=""),
        sa.Column("output_prefix", sa.String(600), nullable=False, server_default=""),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "workflow_steps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(32), sa.ForeignKey("workflow_instances.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("depends_on", sa.JSON, nullable=False),
        sa.Column("state", sa.String(32), nullable=False, index=True),
        sa.Column("job_name", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True, index=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("nodes", sa.String(500), nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("log_tail", sa.Text, nullable=False),
        sa.Column("script", sa.Text, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("missing_cycles", sa.Integer, nullable=False, server_default="0"),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("instance_id", "name", name="uq_wf_steps_instance_name"),
    )
    op.create_table(
        "workflow_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(32), sa.ForeignKey("workflow_instances.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("step", sa.String(32), nullable=False, server_default=""),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=False, server_default=""),
        sa.Column("to_state", sa.String(32), nullable=False, server_default=""),
        sa.Column("detail", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workflow_events")
    op.drop_table("workflow_steps")
    op.drop_table("workflow_instances")
    op.drop_table("workflow_templates")
