"""Enrolled Slurm clusters: identity on the cluster, the SSH/SFTP connector, Slurm reads.

Public entry points (stable names other capabilities import):

* ``connector.ClusterConnector`` / ``connector.CommandResult`` - run argv lists and stream files over SSH;
* ``identity.connector_for(cluster, principal)`` - the connector with the right credential for a user;
* ``identity.service_connector(cluster)`` - the gateway's own account on a cluster (reconcilers);
* ``slurm.SlurmClient`` - machine-format ``sinfo``/``squeue``/``sacct``/``sbatch``/``scancel``;
* ``errors`` - every failure a caller may want to tell apart (host key changed, unreachable, ...).
"""
