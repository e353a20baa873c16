"""Workflows (issue 4, workflows half): templates, instances, submission to Slurm, the reconciler, staging.

* ``templates``: the template language (pydantic) and parameter resolution;
* ``models``: the tables (templates, instances, steps, events);
* ``render``: one batch script + sbatch options per step (every value shell-quoted);
* ``staging``: inputs S3 -> cluster (SFTP, streamed) and outputs back;
* ``engine``: the submission driver, cancel, and the per-cluster reconciler running inside the service.
"""
