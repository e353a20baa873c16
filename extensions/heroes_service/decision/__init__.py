"""Decision module: run-time prediction from job history, time-limit right-sizing, trace evaluation.

- :mod:`.history`: SWF reader and the job record;
- :mod:`.features`: submit-time features from finished jobs only;
- :mod:`.predictor`: run-time model and calibrated time-limit recommender;
- :mod:`.evaluate`: the online chronological protocol, metrics and baselines;
- :mod:`.model_store`: pickle-free model files.
"""
