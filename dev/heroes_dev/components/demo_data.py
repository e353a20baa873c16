"""Demo data: what a newcomer needs to do the main job right after ``make demo`` (issue 17).

After this component, ``alpha`` and ``beta`` are enrolled for ``acme`` and ``globex``, the example templates
(extensions/heroes_service/workflows/examples/) are published in both organizations (every step measures
energy: the templates' default), and each demo user has a small sample input in their own S3 space.

Why a component of the stack and not of the service: the service starts empty on a real site; demo content
belongs to the demo. Everything goes through the service's REST API as the people who would do it (alice
for acme, dave for globex, each user for their own files), never into the service's database, so the demo
exercises the same checks as a person would.

Host keys are pinned from the stack's own key files: the fingerprint the service reads from the login node
must equal the one computed from ``login-<cluster>``'s public host key, or nothing is enrolled.

The two clusters differ so that the decision differs by policy: beta is newer (1.6x faster, efficient,
low PUE) but dearer per core-hour; alpha is older, cheap and power-hungry. For a job with no history the
performance and energy policies pick beta and the cost policy picks alpha.

Idempotent: each step looks first and only adds what is missing; ``health`` is the same look, so a second
``make demo`` finds everything present and changes nothing.
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..output import say
from ..settings import StackSettings
from .base import Component, Health

EXAMPLES = Path("extensions") / "heroes_service" / "workflows" / "examples"
API = "/services/heroes/api/v1"
#: organization -> its admin in the demo realm (hub_config/keycloak/heroes-realm.json)
ORG_ADMINS = {"acme": "alice", "globex": "dave"}
#: demo users who get a sample input in their personal space
DEMO_USERS = ("alice", "bob", "carol", "dave")
SAMPLE_KEY = "samples/jobs.csv"
WORK_DIR = "heroes-work/{login}"

CLUSTERS = {
    "alpha": {
        "description": "Older CPU nodes: cheap per core-hour, but slower and power-hungry (demo).",
        "relative_speed": 1.0,
        "price_model": {"kind": "on-premises", "currency": "EUR", "per_core_hour": 0.02, "per_kwh": 0.08},
        "energy_profile": {"idle_watts_per_node": 40.0, "watts_per_core": 12.0, "pue": 1.6,
                           "carbon_g_per_kwh": 350.0},
    },
    "beta": {
        "description": "Newer CPU nodes: 1.6x faster and efficient, dearer per core-hour (demo).",
        "relative_speed": 1.6,
        "price_model": {"kind": "on-premises", "currency": "EUR", "per_core_hour": 0.06, "per_kwh": 0.25},
        "energy_profile": {"idle_watts_per_node": 20.0, "watts_per_core": 8.0, "pue": 1.1,
                           "carbon_g_per_kwh": 60.0},
    },
}


def demo_password(user: str) -> str:
    return f"{user}-pass"


def service_url(settings: StackSettings) -> str:
    return f"http://{settings.host}:{settings.ports.hub}{API}"


def sample_csv() -> bytes:
    """A small, deterministic regression set for sklearn-train (target ``runtime_s``): jobs' size -> run time."""
    rng = random.Random(17)
    out = io.StringIO()
    out.write("cores,input_gb,iterations,runtime_s\n")
    for _ in range(240):
        cores, gb, iters = rng.choice((1, 2, 4, 8, 16)), round(rng.uniform(0.1, 20.0), 2), rng.randrange(100, 5000)
        runtime = 30 + iters * gb * 0.9 / cores ** 0.8 + rng.gauss(0, 25)
        out.write(f"{cores},{gb},{iters},{max(runtime, 1.0):.1f}\n")
    return out.getvalue().encode()


class DemoError(RuntimeError):
    """A step of the demo set-up failed; the message says which and what the service answered."""


@dataclass
class Changes:
    """What one run of ``apply`` did (empty on a second run: the idempotence the tests check)."""

    done: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


class DemoClient:
    """The REST calls of the demo set-up, each as a logged-in demo user (Keycloak tokens via the service)."""

    def __init__(self, settings: StackSettings, timeout: float = 120.0):
        import httpx

        self.settings = settings
        self.http = httpx.Client(base_url=service_url(settings), timeout=timeout)
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self.http.close()

    def call(self, user: str, method: str, path: str, expect: tuple[int, ...] = (200,), **kwargs):
        if user not in self._tokens:
            r = self.http.post("/organization/auth/login", json={"username": user, "password": demo_password(user)})
            if r.status_code != 200:
                raise DemoError(f"{user} cannot log in ({r.status_code}: {r.text[:200]})")
            self._tokens[user] = r.json()["access_token"]
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {self._tokens[user]}"}
        r = self.http.request(method, path, headers=headers, **kwargs)
        if r.status_code not in expect:
            raise DemoError(f"{method} {path} as {user} answered {r.status_code}: {r.text[:500]}")
        return r

    # --- looks (health and apply share them) ----------------------------------------------------------
    def clusters(self, admin: str) -> dict[str, dict]:
        return {c["name"]: c for c in self.call(admin, "GET", "/organization/admin/cluster/").json()}

    def templates(self, user: str) -> set[str]:
        return {t["name"] for t in self.call(user, "GET", "/organization/workflow/template").json()}

    def own_bucket(self, user: str) -> str:
        buckets = self.call(user, "GET", "/organization/data/list").json()["buckets"]
        return next(b["bucket"] for b in buckets if b["kind"] == "user" and b["default"])

    def has_object(self, user: str, bucket: str, key: str) -> bool:
        folder = key.rsplit("/", 1)[0] + "/"
        listing = self.call(user, "GET", f"/organization/data/bucket/{bucket}/list", params={"prefix": folder}).json()
        return any(o.get("key") == key for o in listing.get("objects", []))


def expected_fingerprint(settings: StackSettings, cluster: str) -> str:
    from .login import host_key_fingerprint

    return host_key_fingerprint(settings, cluster)


def missing(client: DemoClient, settings: StackSettings) -> list[str]:
    """What the demo lacks (empty when it is complete); a pinned key that differs from the stack's is listed."""
    gaps = []
    examples = sorted(p.stem for p in (settings.repo / EXAMPLES).glob("*.yaml"))
    for org, admin in ORG_ADMINS.items():
        enrolled = client.clusters(admin)
        for name in CLUSTERS:
            if name not in enrolled:
                gaps.append(f"cluster {name} of {org}")
            elif enrolled[name]["host_key_fingerprint"] != expected_fingerprint(settings, name):
                gaps.append(f"cluster {name} of {org} pins another host key than the stack's")
        gaps += [f"template {t} of {org}" for t in examples if t not in client.templates(admin)]
    for user in DEMO_USERS:
        if not client.has_object(user, client.own_bucket(user), SAMPLE_KEY):
            gaps.append(f"{SAMPLE_KEY} of {user}")
    return gaps


# --- the steps --------------------------------------------------------------------------------------------
def enroll(client: DemoClient, settings: StackSettings, admin: str, name: str) -> dict:
    """Enroll the stack's cluster ``name`` as ``admin``, pinning the host key from the stack's key file."""
    from .login import ssh_port, user_key_path

    host, port = settings.host, ssh_port(settings, name)
    pinned = expected_fingerprint(settings, name)
    offered = client.call(admin, "POST", "/organization/admin/cluster/host-key",
                          json={"host": host, "port": port}).json()["fingerprint"]
    if offered != pinned:
        raise DemoError(f"{host}:{port} presents host key {offered}, but the stack's key file of {name} says "
                        f"{pinned}: not enrolling a login node that is not the stack's")
    body = {"name": name, "host": host, "port": port, "host_key_fingerprint": pinned, "work_dir": WORK_DIR,
            "container_runtime": "charliecloud", "identity_mode": "per-user", "service_login": "heroes",
            # the gateway's service account key (the stack's own file): the reconcilers' view of the queue,
            # and what lets an admin without a cluster login (dave) enroll a per-user cluster
            "service_private_key": user_key_path(settings, "heroes").read_text(), **CLUSTERS[name]}
    return client.call(admin, "POST", "/organization/admin/cluster/", expect=(201,), json=body).json()


def check_pinned(settings: StackSettings, org: str, cluster: dict) -> None:
    """An enrolled demo cluster must pin the stack's current host key; never re-enrolled behind an admin's back."""
    expected = expected_fingerprint(settings, cluster["name"])
    if cluster["host_key_fingerprint"] != expected:
        raise DemoError(f"cluster {cluster['name']} of {org} pins host key {cluster['host_key_fingerprint']}, but the "
                        f"stack's login node now has {expected} (its key was made anew): remove the cluster (Admin "
                        f"app, Clusters tab) as {ORG_ADMINS[org]}, then run: heroes dev up demo-data")


def publish(client: DemoClient, admin: str, source: str) -> dict:
    return client.call(admin, "POST", "/organization/admin/workflow/template", expect=(201,),
                       json={"source": source}).json()


def apply(settings: StackSettings, client: DemoClient | None = None) -> Changes:
    """Add whatever of the demo is missing; a second call finds everything present and changes nothing."""
    own = client is None
    client = client or DemoClient(settings)
    changes = Changes()
    try:
        for org, admin in ORG_ADMINS.items():
            enrolled = client.clusters(admin)
            for name in CLUSTERS:
                if name in enrolled:
                    check_pinned(settings, org, enrolled[name])
                    changes.present.append(f"cluster {name} of {org}")
                    continue
                enroll(client, settings, admin, name)
                changes.done.append(f"enrolled {name} for {org} (host key {expected_fingerprint(settings, name)})")
            published = client.templates(admin)
            for path in sorted((settings.repo / EXAMPLES).glob("*.yaml")):
                if path.stem in published:
                    changes.present.append(f"template {path.stem} of {org}")
                    continue
                version = publish(client, admin, path.read_text())["version"]
                changes.done.append(f"published {path.stem} v{version} for {org}")
        data = sample_csv()
        for user in DEMO_USERS:
            bucket = client.own_bucket(user)
            if client.has_object(user, bucket, SAMPLE_KEY):
                changes.present.append(f"{SAMPLE_KEY} of {user}")
                continue
            client.call(user, "POST", "/organization/data/upload", expect=(201,),
                        params={"bucket": bucket, "key": SAMPLE_KEY}, content=data,
                        headers={"Content-Type": "text/csv"})
            changes.done.append(f"uploaded {SAMPLE_KEY} ({len(data)} bytes) to {user}'s space")
    finally:
        if own:
            client.close()
    return changes


class DemoData(Component):
    """Seeds the running gateway through its API; no process of its own."""

    name = "demo-data"
    depends = ("keycloak", "s3", "slurm-alpha", "slurm-beta", "image", "login-alpha", "login-beta", "jupyterhub")
    has_processes = False
    start_timeout = 120.0

    def ensure(self) -> None:
        """dave (globex's admin) comes from the realm file: a Keycloak imported before he was added learns him
        here (the keycloak component's own reconciliation; a no-op when the realm file is unchanged)."""
        from .keycloak import Keycloak

        Keycloak(self.settings).configure()

    def start(self) -> None:
        changes = apply(self.settings)
        for line in changes.done:
            say(self.name, line)
        if not changes.done:
            say(self.name, "everything was present; nothing changed")

    def health(self) -> Health:
        try:
            client = DemoClient(self.settings, timeout=30.0)
        except ImportError as exc:
            return Health(False, f"httpx is missing: {exc}")
        try:
            gaps = missing(client, self.settings)
        except Exception as exc:  # noqa: BLE001 (an unreachable service is "not ready", with its words)
            return Health(False, f"cannot look at the demo data: {exc}")
        finally:
            client.close()
        if gaps:
            return Health(False, "missing: " + "; ".join(gaps[:6]) + (" ..." if len(gaps) > 6 else ""))
        return Health(True, f"alpha and beta enrolled for {' and '.join(ORG_ADMINS)}, example templates published, "
                            f"{SAMPLE_KEY} in {', '.join(DEMO_USERS)}'s spaces")
