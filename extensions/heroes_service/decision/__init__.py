"""Decision module: run-time prediction from job history, time-limit right-sizing, trace evaluation, placement.

- :mod:`.history`: SWF reader and the job record;
- :mod:`.features`: submit-time features from finished jobs only;
- :mod:`.predictor`: run-time model and calibrated time-limit recommender;
- :mod:`.evaluate`: the online chronological protocol, metrics and baselines;
- :mod:`.model_store`: pickle-free model files;
- :mod:`.placement`: per-cluster wait/run/energy/cost and the policy's choice (``choose_cluster`` for ``auto``),
  with :mod:`.wait` (Slurm's ``sbatch --test-only``), :mod:`.costs` and :mod:`.catalog` (price models),
  :mod:`.policies` and :mod:`.frequency` (``--cpu-freq`` advice).

``choose_cluster`` is imported lazily: the trace tools (``heroes decision evaluate``) need none of the service.
"""


def __getattr__(name: str):
    if name == "choose_cluster":
        from .placement import choose_cluster

        return choose_cluster
    raise AttributeError(name)
