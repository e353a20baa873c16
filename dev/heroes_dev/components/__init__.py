"""The embedded stack's components, in start order.

Each module defines one ``Component`` subclass; ``all_components`` is the single list the CLI, the
status table and the test command walk through.
"""
from __future__ import annotations

import importlib

from ..settings import StackSettings
from .base import Component, Health

#: module:Class, in dependency order (a component's ``depends`` must appear before it)
REGISTRY: tuple[str, ...] = (
    "keycloak:Keycloak",
    "s3:S3Server",
    "postgres:PostgreSQL",
    "slurm:MariaDB",
    "slurm:Munge",
    "slurm:SlurmDBD",
    "slurm:SlurmCluster:alpha",
    "slurm:SlurmCluster:beta",
    "containers:ContainerImage",
    "desktop:DesktopTools",
    "login:LoginNode:alpha",
    "login:LoginNode:beta",
    "jupyterhub:JupyterHub",
    "demo_data:DemoData",  # last: seeds the running gateway through its API (issue 17)
)


def all_components(settings: StackSettings) -> list[Component]:
    components = []
    for entry in REGISTRY:
        module_name, class_name, *args = entry.split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        components.append(getattr(module, class_name)(settings, *args))
    return components


__all__ = ["Component", "Health", "all_components", "REGISTRY"]
