"""Energy of job steps: per-node EAR records and per-second samples (issue 6, service side).

Revision ID: 0004_energy
Revises: 0003_workflows
"""
from alembic import op
import sqlalchemy as sa

revision = "0004_energy"
down_revision = "0003_workflows"
branch_labels = None
depends_on = None

_MEASURES = ("time_s", "dc_power_w", "dram_power_w", "pck_power_w", "gpu_power_w", "max_power_w", "energy_j",
             "cpu_gflops", "gpu_gflops", "mem_gbs", "io_mbs", "cpi", "avg_cpufreq_khz", "cpu_util")


def upgrade() -> None:
    op.create_table(
        "energy_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("organization", sa.String(63), nullable=False, index=True),
        sa.Column("username", sa.String(255), nullable=False, index=True),
        sa.Column("cluster", sa.String(63), nullable=False, server_default=""),
        sa.Column("instance_id", sa.String(64), nullable=False, server_default="", index=True),
        sa.Column("template", sa.String(128), nullable=False, server_default=""),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("step_id", sa.Integer, nullable=False),
        sa.Column("app_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("job_name", sa.String(255), nullable=False, server_default=""),
        sa.Column("variant", sa.String(16), nullable=False, server_default=""),
        sa.Column("start_time", sa.Float, nullable=True, index=True),
        sa.Column("end_time", sa.Float, nullable=True),
        *[sa.Column(name, sa.Float, nullable=True) for name in _MEASURES],
        sa.Column("estimated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("source_file", sa.String(255), nullable=False, server_default=""),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("cluster", "job_id", "step_id", "node", name="uq_energy_records_step_node"),
    )
    op.create_table(
        "energy_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("organization", sa.String(63), nullable=False, index=True),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("cluster", sa.String(63), nullable=False, server_default=""),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("step_id", sa.Integer, nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("elapsed_s", sa.Float, nullable=False),
        sa.Column("dc_power_w", sa.Float, nullable=True),
        sa.Column("pck_power_w", sa.Float, nullable=True),
        sa.Column("dram_power_w", sa.Float, nullable=True),
        sa.Column("gpu_power_w", sa.Float, nullable=True),
        sa.Column("estimated", sa.String(255), nullable=False, server_default=""),
    )
    op.create_index("ix_energy_samples_step", "energy_samples", ["cluster", "job_id", "step_id", "node"])


def downgrade() -> None:
    op.drop_index("ix_energy_samples_step", table_name="energy_samples")
    op.drop_table("energy_samples")
    op.drop_table("energy_records")
