"""Staging transfers: every input the gateway staged from S3 to a cluster, with its bytes, seconds and
content hash (the measured S3 -> cluster throughput, and which inputs are already on a cluster).

Revision ID: 0011_staging_transfers
Revises: 0010_energy_org_key
"""
from alembic import op
import sqlalchemy as sa

revision = "0011_staging_transfers"
down_revision = "0010_energy_org_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staging_transfers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("organization", sa.String(63), nullable=False, index=True),
        sa.Column("cluster_id", sa.String(36), nullable=False, index=True),
        sa.Column("instance_id", sa.String(32), nullable=False, index=True),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("etag", sa.String(255), nullable=False, server_default=""),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("remote_path", sa.String(1200), nullable=False, server_default=""),
        sa.Column("copied_from", sa.String(1200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("staging_transfers")
