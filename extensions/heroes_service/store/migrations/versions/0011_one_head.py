"""One head again: visualization (0009) and the energy organization key (0010) were written in parallel
from 0008; this joins them so the next migration has a single parent.

Revision ID: 0011_one_head
Revises: 0009_visualization, 0010_energy_org_key
"""
revision = "0011_one_head"
down_revision = ("0009_visualization", "0010_energy_org_key")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the two branches touch different tables."""


def downgrade() -> None:
    """Nothing to undo."""
