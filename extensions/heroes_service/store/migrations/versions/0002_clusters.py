"""Enrolled Slurm clusters (issue 4, clusters half).

Revision ID: 0002_clusters
Revises: 0001_identity
"""
from alembic import op
import sqlalchemy as sa

revision = "0002_clusters"
down_revision = "0001_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("organization", sa.String(63), nullable=False, index=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("description", sa.String(500), nullable=False, server_default=""),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=False, server_default="22"),
        sa.Column("work_dir", sa.String(500), nullable=False),
        sa.Column("container_runtime", sa.String(32), nullable=False),
        sa.Column("identity_mode", sa.String(32), nullable=False),
        sa.Column("service_login", sa.String(32), nullable=False, server_default="heroes"),
        sa.Column("service_key_enc", sa.Text, nullable=True),
        sa.Column("host_key_type", sa.String(64), nullable=False),
        sa.Column("host_key_b64", sa.Text, nullable=False),
        sa.Column("host_key_fingerprint", sa.String(80), nullable=False),
        sa.Column("slurm_version", sa.String(32), nullable=False, server_default=""),
        sa.Column("slurm_cluster_name", sa.String(63), nullable=False, server_default=""),
        sa.Column("partitions", sa.JSON, nullable=False),
        sa.Column("default_partition", sa.String(63), nullable=False, server_default=""),
        sa.Column("price_model", sa.JSON, nullable=False),
        sa.Column("energy_profile", sa.JSON, nullable=False),
        sa.Column("relative_speed", sa.Float, nullable=False, server_default="1.0"),
        sa.Column("created_by", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("organization", "name", name="uq_clusters_org_name"),
    )


def downgrade() -> None:
    op.drop_table("clusters")
