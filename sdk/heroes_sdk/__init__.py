"""heroes_sdk: the Python SDK of the HEROES gateway, for notebooks and scripts.

Inside a JupyterHub server of the gateway it needs no arguments (the server's token and the service's URL are
in its environment); on a laptop, log in once with ``heroes login`` or pass a URL and credentials:

    import heroes_sdk

    heroes = heroes_sdk.connect()                       # or connect("https://gateway.example.org", username=...)
    choice = heroes.decide("heat-diffusion", {"points": 400}, policy="energy")
    run = heroes.submit(choice).wait()                  # progress bar with each step's state
    profile = run.read_csv("outputs/profile.csv")       # a pandas DataFrame
    run.plot_energy()                                   # a plotly figure

Everything public is listed in ``__all__``; the rest (modules starting with ``_``, ``heroes_sdk.cli``'s
helpers) may change. Errors are :class:`HeroesError` subclasses carrying the service's own message and the
HTTP status.
"""
from __future__ import annotations

from .client import Client, connect
from .credentials import credentials_path
from .data import DataSpace
from .energy import compare_figure, records_dataframe
from .errors import (AuthenticationError, Conflict, HeroesError, InstanceFailed, InvalidRequest, NotFound,
                     PermissionDenied, QuotaExceeded, ServiceUnavailable, SubmitUncertain, WaitTimeout)
from .instance import FINAL_STATES, Event, Instance, Step
from .models import (Bucket, Candidate, Cluster, DataObject, Decision, EnergyRecord, Listing, Me, Parameter,
                     Partition, Price, Rightsizing, Template)

__version__ = "0.1.0"

__all__ = [
    "connect", "Client", "DataSpace", "credentials_path",
    # objects the API answers
    "Me", "Cluster", "Partition", "Price", "Template", "Parameter", "Decision", "Candidate", "Rightsizing",
    "Instance", "Step", "Event", "FINAL_STATES", "Bucket", "DataObject", "Listing", "EnergyRecord",
    # figures and tables
    "records_dataframe", "compare_figure",
    # errors
    "HeroesError", "AuthenticationError", "PermissionDenied", "NotFound", "Conflict", "InvalidRequest",
    "QuotaExceeded", "ServiceUnavailable", "SubmitUncertain", "InstanceFailed", "WaitTimeout",
]
