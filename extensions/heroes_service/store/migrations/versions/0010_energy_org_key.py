"""Energy: a record's key includes its organization, so one tenant's records can neither reveal nor suppress
another's (the duplicate check of an ingest was on (cluster, job, step, node) alone).

Revision ID: 0010_energy_org_key
Revises: 0008_cluster_jobs (a branch beside 0009_visualization; the service upgrades every head)
"""
from alembic import op

revision = "0010_energy_org_key"
down_revision = "0008_cluster_jobs"
branch_labels = None
depends_on = None

OLD = ("uq_energy_records_step_node", ["cluster", "job_id", "step_id", "node"])
NEW = ("uq_energy_records_org_step_node", ["organization", "cluster", "job_id", "step_id", "node"])
OLD_SAMPLES = ("ix_energy_samples_step", ["cluster", "job_id", "step_id", "node"])
NEW_SAMPLES = ("ix_energy_samples_org_step", ["organization", "cluster", "job_id", "step_id", "node"])


def _swap(drop: tuple, create: tuple, drop_index: tuple, create_index: tuple) -> None:
    # batch mode: SQLite cannot drop a constraint in place (the table is copied); PostgreSQL alters it
    with op.batch_alter_table("energy_records") as batch:
        batch.drop_constraint(drop[0], type_="unique")
        batch.create_unique_constraint(create[0], create[1])
    op.drop_index(drop_index[0], table_name="energy_samples")
    op.create_index(create_index[0], "energy_samples", create_index[1])


def upgrade() -> None:
    _swap(OLD, NEW, OLD_SAMPLES, NEW_SAMPLES)


def downgrade() -> None:
    # two organizations' records of the same step cannot both survive the old key: keep the oldest
    op.execute("DELETE FROM energy_records WHERE id NOT IN (SELECT MIN(id) FROM energy_records "
               "GROUP BY cluster, job_id, step_id, node)")
    _swap(NEW, OLD, NEW_SAMPLES, OLD_SAMPLES)
