"""Trace-driven simulations that say what the decisions are worth: an EASY-backfilling scheduler
(:mod:`.easy`), the replay of a trace with requested, recommended and exact limits (:mod:`.replay`), and the
routing of a trace's jobs over simulated clusters (:mod:`.routing`)."""
