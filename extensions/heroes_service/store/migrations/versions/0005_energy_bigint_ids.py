"""Energy: job and step ids as 64-bit integers (EAR writes Slurm's batch step as 4294967294, past INTEGER).

Revision ID: 0005_energy_bigint_ids
Revises: 0004_energy
"""
from alembic import op
import sqlalchemy as sa

revision = "0005_energy_bigint_ids"
down_revision = "0004_energy"
branch_labels = None
depends_on = None

_COLUMNS = (("energy_records", "job_id"), ("energy_records", "step_id"), ("energy_samples", "job_id"),
            ("energy_samples", "step_id"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite's INTEGER already holds 64 bits
    for table, column in _COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in _COLUMNS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False)
