"""Desktop energy: what the energy collector says about a desktop, on its session row (totals so far while it
runs, read from the collector's progress file; the ingested energy record's once it has ended).

Revision ID: 0013_desktop_energy
Revises: 0012_one_head
"""
from alembic import op
import sqlalchemy as sa

revision = "0013_desktop_energy"
down_revision = "0012_one_head"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("visualization_sessions") as batch:
        batch.add_column(sa.Column("energy_j", sa.Float, nullable=True))
        batch.add_column(sa.Column("energy_time_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("energy_estimated", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("energy_source", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("energy_read_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("visualization_sessions") as batch:
        for name in ("energy_read_at", "energy_source", "energy_estimated", "energy_time_s", "energy_j"):
            batch.drop_column(name)
