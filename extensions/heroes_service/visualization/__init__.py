"""Remote visualization: a desktop (TigerVNC + openbox + a terminal) in a Slurm job, shown in the browser.

The path of a desktop's bytes, with no route from the gateway to compute nodes::

    browser (noVNC, visualization/static) --websocket, one-time ticket--> service (bridge.py)
      --SSH exec channel, pooled paramiko connection--> login node: srun --jobid=<id> --overlap socat
      --Slurm's own I/O forwarding--> node: the desktop's Unix socket (0600, in a 0700 mktemp folder)

* ``script.py``: the batch script (the one renderer's; Xvnc on a private socket, X cookie, openbox, xterm,
  under the energy collector) and the bridge argv;
* ``energy.py``: the desktop's energy from its collector: totals so far while it runs, the ingested record at
  its end, the power profile's estimate only before the first sample;
* ``sessions.py``: validate against the cluster, ``sbatch --test-only``, submit (``clusterjobs.submit``: once,
  adopted by name on a lost answer), end, usage and cost;
* ``tracker.py``: the shared reconciler's DesktopTracker (one squeue per cluster for every kind), the ready
  file, the idle cull, the ledger row when a desktop ends;
* ``grants.py``: one-time tickets and view-only shares; ``rfb.py``: the view-only input filter;
* ``bridge.py``: the websocket, authenticated before ``accept``;
* ``models.py``: the tables (migration 0009).

The API is ``api/visualization.py``; the Desktop app is ``heroes_widgets/desktop_app.py``.
"""
