"""One head again: visualization (0009) and the energy organization key + staging transfers (0010, 0011) were written in parallel
from 0008; this joins them so the next migration has a single parent.

Revision ID: 0012_one_head
Revises: 0009_visualization, 0011_staging_transfers
"""
revision = "0012_one_head"
down_revision = ("0009_visualization", "0011_staging_transfers")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the two branches touch different tables."""


def downgrade() -> None:
    """Nothing to undo."""
