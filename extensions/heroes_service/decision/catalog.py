"""Cloud price catalogs: what one instance of a type costs per hour, in an explicit currency.

A catalog is a JSON file of one of two shapes:

* the ``tedivm/ec2details`` shape (``ec2instances.json``): an object keyed by instance type, each with
  ``vcpu``, ``memory`` ("384 GiB"), optional ``gpu`` and ``prices: {os: {region: {"Shared": $/h}}}``. That
  file carries no currency; AWS list prices are US dollars, so USD is assumed;
* the same instances wrapped with metadata: ``{"currency", "source", "default_region", "default_os",
  "instances": {...}}`` (the project's ``default_catalog.json``).

Catalogs are named, never given as paths: a cluster's price model says ``catalog: "default"`` or a file name,
looked up in the shipped folder and in the folders of ``HEROES_SERVICE_DECISION_CATALOG_DIRS``. An
organization admin therefore cannot make the service read an arbitrary file of its host.
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SHIPPED_DIR = Path(__file__).resolve().parent
DEFAULT_CATALOG = "default"
DEFAULT_FILE = "default_catalog.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.json$")
#: what a tedivm-shaped file means when it says nothing (AWS list prices)
ASSUMED_CURRENCY = "USD"


class CatalogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEROES_SERVICE_DECISION_", extra="ignore")

    catalog_dirs: list[str] = Field(
        default_factory=list,
        description="Folders holding extra price catalogs (JSON) that clusters' price models may name by file "
                    "name, besides the shipped default catalog.")


@lru_cache
def get_catalog_settings() -> CatalogSettings:
    return CatalogSettings()


class CatalogError(ValueError):
    """An unknown catalog, instance type, region or a file that is not a catalog."""


@dataclass(frozen=True)
class Instance:
    name: str
    vcpu: int
    memory_gib: float
    gpus: int


@dataclass
class Catalog:
    name: str
    currency: str
    source: str
    default_region: str
    default_os: str
    instances: dict[str, dict]

    def instance(self, name: str) -> Instance:
        entry = self.instances.get(name)
        if not isinstance(entry, dict):
            raise CatalogError(f"instance type {name!r} is not in catalog {self.name!r}")
        return Instance(name=name, vcpu=int(entry.get("vcpu") or 0), memory_gib=_gib(entry.get("memory")),
                        gpus=int(entry.get("gpu") or 0))

    def hourly_price(self, name: str, region: str | None = None, os: str | None = None) -> float:
        """On-demand price of one instance-hour (shared tenancy) in ``self.currency``."""
        self.instance(name)
        region, os = region or self.default_region, os or self.default_os
        prices = (self.instances[name].get("prices") or {}).get(os) or {}
        entry = prices.get(region)
        if not isinstance(entry, dict) or not isinstance(entry.get("Shared"), (int, float)):
            offered = sorted(prices)[:20]
            raise CatalogError(f"catalog {self.name!r} has no {os} price for {name!r} in region {region!r}"
                               + (f" (regions: {', '.join(offered)})" if offered else ""))
        return float(entry["Shared"])


def _gib(text) -> float:
    match = re.match(r"\s*([\d.,]+)", str(text or ""))
    return float(match.group(1).replace(",", "")) if match else 0.0


def catalog_path(name: str | None) -> Path:
    """Where the named catalog lives (CatalogError when the name is malformed or unknown)."""
    name = name or DEFAULT_CATALOG
    if name == DEFAULT_CATALOG:
        return SHIPPED_DIR / DEFAULT_FILE
    if not NAME_RE.match(name):
        raise CatalogError(f"catalog {name!r}: a catalog is named 'default' or by a file name ending in .json")
    for folder in [SHIPPED_DIR, *map(Path, get_catalog_settings().catalog_dirs)]:
        path = folder / name
        if path.is_file():
            return path
    raise CatalogError(f"catalog {name!r} is not installed on the service (folders: the shipped one and "
                       "HEROES_SERVICE_DECISION_CATALOG_DIRS)")


_cache: dict[str, tuple[float, Path, float, Catalog]] = {}   # name -> (checked at, path, mtime, catalog)
_lock = threading.Lock()
#: seconds between two looks at a catalog file (decide prices every candidate on every call)
RECHECK_S = 10.0


def load(name: str | None) -> Catalog:
    """The named catalog, parsed once per file version (a changed file is re-read within RECHECK_S)."""
    name = name or DEFAULT_CATALOG
    now = time.monotonic()
    with _lock:
        hit = _cache.get(name)
    if hit and now - hit[0] < RECHECK_S:
        return hit[3]
    path = catalog_path(name)
    mtime = path.stat().st_mtime
    if hit and hit[1] == path and hit[2] == mtime:
        catalog = hit[3]
    else:
        catalog = parse(json.loads(path.read_text()), name)
    with _lock:
        _cache[name] = (now, path, mtime, catalog)
    return catalog


def parse(data, name: str) -> Catalog:
    if not isinstance(data, dict):
        raise CatalogError(f"catalog {name!r} is not a JSON object")
    if isinstance(data.get("instances"), dict):
        currency = str(data.get("currency") or "")
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise CatalogError(f"catalog {name!r} must state its currency (ISO 4217, e.g. USD)")
        return Catalog(name=name, currency=currency, source=str(data.get("source") or ""),
                       default_region=str(data.get("default_region") or "us-east-1"),
                       default_os=str(data.get("default_os") or "Linux"), instances=data["instances"])
    if not all(isinstance(v, dict) and "prices" in v for v in list(data.values())[:50]):
        raise CatalogError(f"catalog {name!r} is neither an instance map nor a wrapped catalog")
    return Catalog(name=name, currency=ASSUMED_CURRENCY, source="instance map (ec2details shape), USD assumed",
                   default_region="us-east-1", default_os="Linux", instances=data)
