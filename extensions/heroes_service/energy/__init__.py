"""Energy of job steps (issue 6, service side): EAR/EAR-lite files ingested into ``energy_records`` (one row
per node of a step) and ``energy_samples`` (per-second timelines), queried per step, instance, user,
organization, cluster, template and period. The reading and validation is :mod:`heroes_energy`'s."""
