"""Two real Slurm clusters (``alpha`` and ``beta``) on this one machine, sharing one accounting database.

Pieces, in start order:

* ``mariadb``  - a private ``mariadbd`` (own datadir, socket, port) that stores Slurm's accounting.
* ``munge``    - one ``munged`` with its own key and socket; every Slurm daemon and client of both
                 clusters authenticates through it (``AuthInfo=socket=...``), so Debian's system munged
                 (if any) is never touched.
* ``slurmdbd`` - one accounting daemon for both clusters, so ``sacct -M alpha`` / ``-M beta`` work.
* ``slurm-alpha`` / ``slurm-beta`` - per cluster one ``slurmctld`` and two ``slurmd -N <node>`` that all
                 run on localhost with their own ports, spool and state directories.

No systemd and no cgroups in the VM: process tracking is ``proctrack/linuxproc`` and ``task/none``.
Every daemon runs in the foreground through ``Component.spawn`` so its pid is recorded.

Other components (the sshd login nodes, the spawner) find a cluster through ``slurm_conf_path``,
``slurm_env`` and ``munge_socket``.
"""
from __future__ import annotations

import os
import pwd
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..install import InstallError, ensure_debs, ensure_user, run, write_secret_once
from ..output import say, warn
from ..ports import holder_of
from ..settings import StackSettings
from .base import Component, Health

SLURM_USER = "slurm"
MUNGE_USER = "munge"
MYSQL_USER = "mysql"
ACCOUNTING_DB = "slurm_acct_db"
DB_USER = "slurm"
ACCOUNT = "heroes"
#: Unix accounts that submit jobs on both clusters (the demo realm's users and the service account)
CLUSTER_USERS = ("alice", "bob", "carol", "heroes")
#: the gateway's service account: a Slurm operator, so one reconciler ``squeue`` sees every user's jobs while
#: ``PrivateData=jobs`` hides them from the other users
SERVICE_ACCOUNT = "heroes"
PARTITION = "compute"


@dataclass(frozen=True)
class ClusterShape:
    """What each of a cluster's two nodes claims to have (``config_overrides`` lets them claim it)."""

    cpus: int
    memory_mb: int
    #: disjoint job id ranges, so that a job id alone never matches a job of the other cluster
    first_job_id: int


#: alpha is the small "on-prem" cluster, beta the bigger "cloud" one
SHAPES = {
    "alpha": ClusterShape(cpus=2, memory_mb=2048, first_job_id=1000),
    "beta": ClusterShape(cpus=4, memory_mb=4096, first_job_id=500000),
}


# --- paths other components rely on ------------------------------------------------------------------
def slurm_conf_path(settings: StackSettings, cluster: str) -> Path:
    """The ``slurm.conf`` of ``cluster`` (world-readable: users' sbatch/sacct read it)."""
    return settings.etc(f"slurm-{cluster}") / "slurm.conf"


def slurm_env(settings: StackSettings, cluster: str) -> dict[str, str]:
    """Environment that points Slurm's commands at ``cluster`` (set it in the login node's sshd)."""
    return {"SLURM_CONF": str(slurm_conf_path(settings, cluster))}


def munge_socket(settings: StackSettings) -> Path:
    """The socket of the stack's own munged (its directory is traversable by every user)."""
    return munge_run_dir(settings) / "munge.socket.2"


def munge_run_dir(settings: StackSettings) -> Path:
    return settings.state / "munge"


def munge_key_path(settings: StackSettings) -> Path:
    return settings.data("munge") / "munge.key"


def mariadb_socket(settings: StackSettings) -> Path:
    return settings.state / "mariadb" / "mariadbd.sock"


def db_password_path(settings: StackSettings) -> Path:
    return settings.state / "secrets" / "slurmdbd-storage-password"


def dbd_conf_dir(settings: StackSettings) -> Path:
    """slurmdbd has no ``-f``: it reads ``slurmdbd.conf`` next to ``$SLURM_CONF``, so both live here."""
    return settings.etc("slurmdbd")


def dbd_env(settings: StackSettings) -> dict[str, str]:
    """Environment for slurmdbd itself and for cluster-independent ``sacctmgr`` calls."""
    return {"SLURM_CONF": str(dbd_conf_dir(settings) / "slurm.conf")}


# --- small helpers --------------------------------------------------------------------------------
def _owned_dir(path: Path, user: str, mode: int) -> Path:
    """Create ``path`` (and parents) and give it to ``user`` with ``mode``; daemons check both."""
    path.mkdir(parents=True, exist_ok=True)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)
    return path


def _write_file(path: Path, text: str, user: str = "root", mode: int = 0o644) -> None:
    """Write a file atomically with its final owner and mode (a conf with a password is never 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    entry = pwd.getpwnam(user)
    os.chown(tmp, entry.pw_uid, entry.pw_gid)
    tmp.chmod(mode)
    tmp.replace(path)


def ensure_secret(path: Path) -> str:
    """The secret in ``path``; generated (0600, root) on first use and never rewritten afterwards."""
    # hex: safe inside SQL and slurmdbd.conf without quoting games
    return write_secret_once(path, lambda: secrets.token_hex(24))


def _as_user(user: str) -> list[str]:
    """Prefix that execs a command as ``user`` with its own groups (no fork, so the pid stays the daemon's)."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]


def _foreign_processes(names: set[str], ours: set[int]) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if proc.info["name"] in names and proc.info["pid"] not in ours:
            found.append(f"{proc.info['name']} (pid {proc.info['pid']})")
    return found


# --- MariaDB -----------------------------------------------------------------------------------------
class MariaDB(Component):
    """A private MariaDB that holds Slurm's accounting database (never the system's instance)."""

    name = "mariadb"
    start_timeout = 60.0

    @property
    def datadir(self) -> Path:
        return self.settings.data("mariadb")

    def ports(self) -> dict[str, int]:
        return {"mariadb": self.settings.ports.mariadb}

    def ensure(self) -> None:
        ensure_debs(self.name, ["mariadb-server"])
        self._refuse_foreign_server()
        _owned_dir(mariadb_socket(self.settings).parent, MYSQL_USER, 0o755)
        if (self.datadir / "mysql").is_dir():
            say(self.name, f"data directory present: {self.datadir}")
            return
        say(self.name, f"initialising data directory {self.datadir}")
        _owned_dir(self.datadir, MYSQL_USER, 0o700)
        run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", f"--user={MYSQL_USER}",
             "--auth-root-authentication-method=socket", "--skip-test-db"], timeout=300)

    def _refuse_foreign_server(self) -> None:
        """apt's postinst may have started the system MariaDB: never stop it, but say so clearly.

        Only one on our port blocks us (the port check ran before the install, so recheck now); any
        other one is merely reported.
        """
        ours = {r.pid for r in self.records()}
        foreign = _foreign_processes({"mariadbd", "mysqld"}, ours)
        port = self.settings.ports.mariadb
        holder = holder_of(port)
        if holder:
            raise InstallError(
                f"port {port} is taken by {holder}, a MariaDB/MySQL this stack did not start (the Debian "
                f"package may have started the system service). It is left running: stop it yourself "
                f"(e.g. 'service mariadb stop') or move ours with HEROES_PORT_MARIADB.")
        if foreign:
            warn(self.name, f"a MariaDB we did not start is running: {', '.join(foreign)}; leaving it alone")

    def start(self) -> None:
        socket = mariadb_socket(self.settings)
        self.spawn("mariadbd", [
            "mariadbd", "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={socket}",
            f"--pid-file={socket.parent / 'mariadbd.pid'}",
            f"--port={self.settings.ports.mariadb}",
            f"--bind-address={self.settings.host}",
            f"--user={MYSQL_USER}",
            "--skip-name-resolve",
            # half of slurmdbd's recommended pool (it warns below that); pages are only resident once used
            "--innodb-buffer-pool-size=512M",
            "--innodb-log-file-size=64M",
            "--innodb-lock-wait-timeout=900",
            "--max-connections=64",
        ], env=self.base_env())

    def sql(self, statements: str) -> str:
        """Run SQL as the database root over our socket (root authenticates by unix_socket)."""
        result = run(["mariadb", "--no-defaults", f"--socket={mariadb_socket(self.settings)}", "-u", "root",
                      "--batch", "--skip-column-names"], input=statements, timeout=60)
        return result.stdout

    def health(self) -> Health:
        result = run(["mariadb-admin", "--no-defaults", f"--socket={mariadb_socket(self.settings)}", "-u", "root",
                      "ping"], check=False, timeout=10)
        if result.returncode == 0 and "alive" in result.stdout:
            return Health(True, f"mariadbd alive on {self.settings.host}:{self.settings.ports.mariadb}")
        return Health(False, (result.stdout + result.stderr).strip()[-300:] or "no answer")

    def configure(self) -> None:
        """The ``slurm`` DB user, password from the 0600 secret file (SQL goes via stdin, never argv)."""
        password = ensure_secret(db_password_path(self.settings))
        users = [f"'{DB_USER}'@'{host}'" for host in ("127.0.0.1", "localhost")]
        sql = [f"CREATE DATABASE IF NOT EXISTS {ACCOUNTING_DB};"]
        for user in users:
            sql += [f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY '{password}';",
                    f"ALTER USER {user} IDENTIFIED BY '{password}';",
                    f"GRANT ALL PRIVILEGES ON {ACCOUNTING_DB}.* TO {user};"]
        sql.append("FLUSH PRIVILEGES;")
        self.sql("\n".join(sql))


# --- Munge -------------------------------------------------------------------------------------------
class Munge(Component):
    """The stack's own munged: own key, own socket, run as the ``munge`` user."""

    name = "munge"
    start_timeout = 20.0

    def ensure(self) -> None:
        ensure_debs(self.name, ["munge"])
        _owned_dir(self.settings.data("munge"), MUNGE_USER, 0o700)
        _owned_dir(munge_run_dir(self.settings), MUNGE_USER, 0o755)
        key = munge_key_path(self.settings)
        if key.exists():
            say(self.name, f"key present: {key}")
        else:
            say(self.name, f"generating munge key {key}")
            run(["mungekey", "--create", f"--keyfile={key}"])
        entry = pwd.getpwnam(MUNGE_USER)
        os.chown(key, entry.pw_uid, entry.pw_gid)
        key.chmod(0o400)

    def start(self) -> None:
        data = self.settings.data("munge")
        run_dir = munge_run_dir(self.settings)
        self.spawn("munged", [
            *_as_user(MUNGE_USER), "munged", "--foreground",
            f"--socket={munge_socket(self.settings)}",
            f"--key-file={munge_key_path(self.settings)}",
            f"--pid-file={run_dir / 'munged.pid'}",
            f"--seed-file={data / 'munged.seed'}",  # in the foreground munged logs to stderr (our log)
        ], env=self.base_env())

    def health(self) -> Health:
        socket = str(munge_socket(self.settings))
        cred = run(["munge", "-n", f"--socket={socket}"], check=False, timeout=10)
        if cred.returncode != 0:
            return Health(False, cred.stderr.strip() or "munge failed")
        check = run(["unmunge", f"--socket={socket}"], input=cred.stdout, check=False, timeout=10)
        if check.returncode != 0:
            return Health(False, check.stderr.strip() or "unmunge failed")
        return Health(True, f"munged answers on {socket}")

    def configure(self) -> None:
        """The socket must be reachable by every user (sbatch as bob over ssh)."""
        munge_run_dir(self.settings).chmod(0o755)


# --- slurmdbd ----------------------------------------------------------------------------------------
def _auth_lines(settings: StackSettings) -> list[str]:
    return ["AuthType=auth/munge", f"AuthInfo=socket={munge_socket(settings)}"]


def _accounting_lines(settings: StackSettings) -> list[str]:
    """Client side of the slurmdbd link. Its munge socket is ``AccountingStoragePass``, not AuthInfo."""
    return [
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=localhost",
        f"AccountingStoragePort={settings.ports.slurmdbd}",
        f"AccountingStoragePass={munge_socket(settings)}",
    ]


class SlurmDBD(Component):
    """One accounting daemon for both clusters (``sacct -M <cluster>``)."""

    name = "slurmdbd"
    depends = ("mariadb", "munge")
    start_timeout = 90.0  # the first start creates the accounting tables

    def ports(self) -> dict[str, int]:
        return {"slurmdbd": self.settings.ports.slurmdbd}

    def ensure(self) -> None:
        ensure_debs(self.name, ["slurmdbd", "slurm-client"])
        _owned_dir(self.settings.data("slurmdbd"), SLURM_USER, 0o700)
        dbd_conf_dir(self.settings).mkdir(parents=True, exist_ok=True)
        dbd_conf_dir(self.settings).chmod(0o755)

    def write_conf(self) -> None:
        s = self.settings
        password = ensure_secret(db_password_path(s))
        conf = "\n".join([
            "# generated by heroes dev (slurm.py); rewritten at every start",
            *_auth_lines(s),
            "DbdHost=localhost",
            f"DbdAddr={s.host}",
            f"DbdPort={s.ports.slurmdbd}",
            f"SlurmUser={SLURM_USER}",
            f"PidFile={s.data('slurmdbd') / 'slurmdbd.pid'}",
            "StorageType=accounting_storage/mysql",
            f"StorageHost={s.host}",
            f"StoragePort={s.ports.mariadb}",
            f"StorageUser={DB_USER}",
            f"StoragePass={password}",
            f"StorageLoc={ACCOUNTING_DB}",
            "",
        ])
        # slurmdbd refuses a conf that others can read or that is not its SlurmUser's
        _write_file(dbd_conf_dir(s) / "slurmdbd.conf", conf, user=SLURM_USER, mode=0o600)
        # a client-only slurm.conf so that sacctmgr can reach the dbd before any cluster exists
        client = "\n".join([
            "# client view of the accounting daemon (used by heroes dev for sacctmgr)",
            "ClusterName=heroes-accounting",
            "SlurmctldHost=localhost",
            *_auth_lines(s),
            *_accounting_lines(s),
            "",
        ])
        _write_file(dbd_conf_dir(s) / "slurm.conf", client)

    def start(self) -> None:
        self.write_conf()
        self.spawn("slurmdbd", ["slurmdbd", "-D"], env=self.base_env(**dbd_env(self.settings)))

    def health(self) -> Health:
        result = run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], check=False, timeout=20,
                     env=dbd_env(self.settings))
        if result.returncode != 0:
            return Health(False, (result.stderr or result.stdout).strip()[-300:])
        clusters = ",".join(result.stdout.split()) or "none yet"
        return Health(True, f"slurmdbd on port {self.settings.ports.slurmdbd}; clusters: {clusters}")


# --- one cluster ---------------------------------------------------------------------------------------
class SlurmCluster(Component):
    """One Slurm cluster: a slurmctld and two slurmd (``<cluster>-n1``, ``<cluster>-n2``) on localhost."""

    depends = ("slurmdbd", "munge")
    start_timeout = 60.0

    def __init__(self, settings: StackSettings, cluster: str):
        self.cluster = cluster
        self.name = f"slurm-{cluster}"
        self.shape = SHAPES.get(cluster, ClusterShape(cpus=2, memory_mb=2048, first_job_id=1))
        super().__init__(settings)

    # paths and ports
    @property
    def conf(self) -> Path:
        return slurm_conf_path(self.settings, self.cluster)

    @property
    def data(self) -> Path:
        return self.settings.data(self.name)

    @property
    def nodes(self) -> list[str]:
        return [f"{self.cluster}-n1", f"{self.cluster}-n2"]

    def _ctld_port(self) -> int:
        return getattr(self.settings.ports, f"{self.cluster}_ctld")

    def _slurmd_port(self, index: int) -> int:
        return getattr(self.settings.ports, f"{self.cluster}_slurmd") + index

    def ports(self) -> dict[str, int]:
        ports = {"slurmctld": self._ctld_port()}
        for i, node in enumerate(self.nodes):
            ports[f"slurmd {node}"] = self._slurmd_port(i)
        return ports

    def env(self) -> dict[str, str]:
        return slurm_env(self.settings, self.cluster)

    # lifecycle
    def ensure(self) -> None:
        ensure_debs(self.name, ["slurm-wlm", "slurm-client"])
        for user in CLUSTER_USERS:
            ensure_user(self.name, user)
        _owned_dir(self.data, "root", 0o755)
        _owned_dir(self.data / "state", SLURM_USER, 0o700)
        _owned_dir(self.data / "run", SLURM_USER, 0o755)
        _owned_dir(self.data / "spool", "root", 0o755)
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.parent.chmod(0o755)

    def conf_text(self) -> str:
        s, shape = self.settings, self.shape
        lines = [
            f"# cluster {self.cluster}: generated by heroes dev (slurm.py); rewritten at every start",
            f"ClusterName={self.cluster}",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={self._ctld_port()}",
            f"FirstJobId={shape.first_job_id}",
            f"SlurmUser={SLURM_USER}",
            "SlurmdUser=root",
            *_auth_lines(s),
            "CredType=cred/munge",
            f"StateSaveLocation={self.data / 'state'}",
            f"SlurmdSpoolDir={self.data / 'spool' / '%n'}",
            f"SlurmctldPidFile={self.data / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.data / 'run' / 'slurmd-%n.pid'}",
            # no systemd, no cgroups in the VM
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/linux",
            "JobAcctGatherFrequency=10",
            # nodes claim the CPUs/memory written here, not what the VM has
            "SlurmdParameters=config_overrides",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "ReturnToService=2",
            "MailProg=/bin/true",
            "KillWait=5",
            "InactiveLimit=0",
            "MinJobAge=300",
            "SlurmctldTimeout=60",
            "SlurmdTimeout=120",
            # accounting in the shared slurmdbd
            *_accounting_lines(s),
            "JobCompType=jobcomp/none",
            # tenants must not see each other's jobs (names carry instance ids, commands carry parameters)
            "PrivateData=jobs,accounts,usage",
        ]
        for i, node in enumerate(self.nodes):
            lines.append(f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 Port={self._slurmd_port(i)} "
                         f"CPUs={shape.cpus} RealMemory={shape.memory_mb} State=UNKNOWN")
        lines.append(f"PartitionName={PARTITION} Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE "
                     f"State=UP DefMemPerCPU={shape.memory_mb // shape.cpus // 2}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        _write_file(self.conf, self.conf_text())  # 0644: users' sbatch/sacct must read it
        self.register_cluster()
        env = self.base_env(**self.env())
        self.spawn(f"slurmctld-{self.cluster}", ["slurmctld", "-D", "-f", str(self.conf)], env=env)
        for node in self.nodes:
            self.spawn(f"slurmd-{node}", ["slurmd", "-D", "-N", node, "-f", str(self.conf)], env=env)

    def stop(self) -> list[str]:
        """Cancel this cluster's jobs, stop its daemons, then end job steps that outlived them.

        slurmstepd detaches from slurmd (so that a slurmd restart keeps jobs alive, as on a real
        cluster); without this, ``down`` would leave users' jobs running with nobody tracking them.
        """
        self._cancel_jobs()
        stopped = super().stop()
        for proc in self._orphan_steps():
            try:
                family = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                continue
            for member in family:
                try:
                    member.terminate()
                except psutil.Error:
                    pass
            _, alive = psutil.wait_procs(family, timeout=5)
            for member in alive:
                try:
                    member.kill()
                except psutil.Error:
                    pass
            stopped.append(f"job step (pid {proc.pid})")
        return stopped

    def _cancel_jobs(self, wait: float = 20.0) -> None:
        ctld = [r for r in self.records() if r.name.startswith("slurmctld") and r.alive()]
        if not ctld:
            return
        queued = run(["squeue", "-h", "-o", "%i"], env=self.env(), check=False, timeout=15)
        jobs = queued.stdout.split() if queued.returncode == 0 else []
        if not jobs:
            return
        say(self.name, f"cancelling {len(jobs)} job(s) before stopping: {' '.join(jobs)}")
        run(["scancel", *jobs], env=self.env(), check=False, timeout=15)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            left = run(["squeue", "-h", "-o", "%i"], env=self.env(), check=False, timeout=15).stdout.split()
            if not left:
                return
            time.sleep(0.5)

    def _orphan_steps(self) -> list[psutil.Process]:
        """slurmstepd processes of this cluster, recognised by their socket in our spool directory."""
        spool = str(self.data / "spool") + os.sep
        found = []
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] != "slurmstepd":
                continue
            try:
                sockets = proc.net_connections(kind="unix")
            except psutil.Error:
                continue
            if any(isinstance(c.laddr, str) and c.laddr.startswith(spool) for c in sockets):
                found.append(proc)
        return found

    def sacctmgr(self, *args: str, check: bool = True):
        return run(["sacctmgr", "-i", "-n", "-P", *args], env=self.env(), check=check, timeout=30)

    def register_cluster(self) -> None:
        """The cluster must exist in slurmdbd before its slurmctld registers there."""
        listed = self.sacctmgr("list", "cluster", "format=cluster").stdout.split()
        if self.cluster in listed:
            return
        say(self.name, f"registering cluster {self.cluster} in slurmdbd")
        self.sacctmgr("add", "cluster", self.cluster)

    def health(self) -> Health:
        ping = run(["scontrol", "ping"], env=self.env(), check=False, timeout=15)
        if ping.returncode != 0 or "UP" not in ping.stdout:
            return Health(False, (ping.stdout + ping.stderr).strip()[-300:] or "slurmctld does not answer")
        states = self.node_states()
        usable = {"idle", "mix", "mixed", "alloc", "allocated", "comp", "completing"}
        bad = {n: st for n, st in states.items() if st not in usable}
        missing = [n for n in self.nodes if n not in states]
        if bad or missing:
            return Health(False, f"nodes not ready: {bad or ''} {missing or ''}".strip())
        return Health(True, f"slurmctld on port {self._ctld_port()}; nodes " +
                      ", ".join(f"{n}={st}" for n, st in sorted(states.items())))

    def node_states(self) -> dict[str, str]:
        """Node -> long state name as sinfo prints it (``idle``, ``mixed``, ``down*``, ...)."""
        out = run(["sinfo", "-h", "-N", "-o", "%N %T"], env=self.env(), check=False, timeout=15)
        states = {}
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1].lower()
        return states

    def configure(self) -> None:
        """Cluster, account ``heroes`` and its users in slurmdbd, each added only where missing.

        The cluster itself is already registered in ``start`` (slurmctld must find it there when it
        first connects); repeating it here keeps ``configure`` complete on its own.
        """
        self.register_cluster()
        accounts = self.sacctmgr("list", "account", "format=account").stdout.split()
        if ACCOUNT not in accounts:
            say(self.name, f"adding account {ACCOUNT}")
            self.sacctmgr("add", "account", ACCOUNT, "Description=HEROES gateway users", "Organization=heroes",
                          f"Cluster={self.cluster}")
        assocs = self.sacctmgr("list", "association", f"cluster={self.cluster}", "format=account,user").stdout
        existing = {tuple(line.split("|")) for line in assocs.splitlines()}
        if (ACCOUNT, "") not in existing:
            self.sacctmgr("add", "account", ACCOUNT, f"Cluster={self.cluster}")
        missing = [u for u in CLUSTER_USERS if (ACCOUNT, u) not in existing]
        if missing:
            say(self.name, f"adding users {', '.join(missing)} to account {ACCOUNT}")
            self.sacctmgr("add", "user", ",".join(missing), f"Account={ACCOUNT}", f"DefaultAccount={ACCOUNT}",
                          f"Cluster={self.cluster}")
        levels = self.sacctmgr("list", "user", SERVICE_ACCOUNT, "format=user,adminlevel").stdout
        if "Operator" not in levels:
            say(self.name, f"making {SERVICE_ACCOUNT} a Slurm operator (sees all jobs for the reconciler)")
            self.sacctmgr("modify", "user", SERVICE_ACCOUNT, "set", "adminlevel=Operator")
