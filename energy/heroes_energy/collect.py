"""EAR-lite collector: wrap one job step's command, sample once a second, write EAR-style CSVs.

Usage::

    python -m heroes_energy.collect --out DIR [--interval 1.0] [--ids KEY=VALUE ...] -- CMD ARGS...

Writes ``DIR/heroes.<job>.<step>.<node>.csv`` (EAR's application CSV in the HEROES plugin layout plus
``EARLITE_ESTIMATED``) and ``DIR/heroes.<job>.<step>.<node>.samples.csv`` (one row per interval, written
as it goes so a killed step still leaves its timeline). ``--progress FILE`` also keeps the totals so far
(time, energy, the columns estimated) in a small JSON file replaced after every sample, for a long job
(a remote desktop) whose energy is shown while it runs. The wrapped command's exit status is ours;
SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 are forwarded to it, and a command killed by a signal
makes the collector die of the same signal after the files are written.

Standard library only (pynvml optional) so the gateway can stage this package to any cluster.
"""
from __future__ import annotations

import argparse
import grp
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import columns as C
from .estimate import TdpModel, cpu_power_w, tdp_for
from .gpu import GpuSample, NvmlSampler, allowed_gpus
from .procfs import FrequencySource, TreeIo, process_tree, read_cpu_info, read_cpu_times, utilization
from .rapl import DEFAULT_POWERCAP_ROOT, Opener, RaplReader, read_text
from .writer import format_app_row, write_app_csv, write_progress, SampleWriter

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

ID_ALIASES = {
    "instance": "HEROES_INSTANCE_WORKFLOW_ID",
    "template": "HEROES_TEMPLATE_WORKFLOW_ID",
    "user": "HEROES_USER_ID",
    "org_name": "HEROES_ORGANIZATION_NAME",
    "organization_name": "HEROES_ORGANIZATION_NAME",
    "org_id": "HEROES_ORGANIZATION_ID",
    "organization_id": "HEROES_ORGANIZATION_ID",
}


@dataclass
class StepInfo:
    """Who and what the step is: Slurm/HEROES ids and the EAR job fields we can fill."""

    job_id: str
    step_id: str
    node: str
    user: str
    group: str
    account: str
    job_name: str
    nprocs: int
    heroes_ids: dict[str, str]


def clean(text: str) -> str:
    """A free-text value made safe for a ';'-separated field (job names and the like come from users)."""
    return text.replace(";", "_").replace("\n", " ").replace("\r", " ")


def heroes_ids_from(pairs: list[str], environ: dict) -> dict[str, str]:
    """The five HEROES ids: ``--ids KEY=VALUE`` first, then the environment, then the plugin's defaults."""
    ids = {name: clean(environ.get(name) or default)
           for name, default in zip(C.HEROES_ID_COLUMNS, C.HEROES_ID_DEFAULTS)}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name = ID_ALIASES.get(key.strip().lower(), key.strip().upper())
        if not sep or name not in ids:
            raise SystemExit(f"heroes_energy.collect: --ids takes KEY=VALUE with KEY in "
                             f"{sorted(ID_ALIASES)} or the HEROES_* names, got {pair!r}")
        if ";" in value or "\n" in value:
            raise SystemExit(f"heroes_energy.collect: id {key} must not contain ';' or a newline")
        ids[name] = value
    return ids


def step_info(command: list[str], ids: dict[str, str], environ: dict, local_id: int,
              job_id: str | None = None, step_id: str | None = None, node: str | None = None) -> StepInfo:
    """Fill the EAR job fields from Slurm's environment (falling back to local values)."""
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    nprocs = environ.get("SLURM_NTASKS") or environ.get("SLURM_NPROCS") or "1"
    job = job_id or environ.get("SLURM_JOB_ID") or str(local_id)
    step = step_id or environ.get("SLURM_STEP_ID") or "0"
    # EAR's JOBID/STEPID are integers; anything else would make the file unreadable
    job = job if job.isdigit() else str(local_id)
    step = step if step.isdigit() else "0"
    return StepInfo(
        job_id=job,
        step_id=step,
        # Slurm's node name first: several slurmd may share one host (slurmd -N), and EAR names nodes as Slurm does
        node=clean(node or environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]),
        user=user,
        group=group,
        account=clean(environ.get("SLURM_JOB_ACCOUNT", "")),
        job_name=clean(environ.get("SLURM_JOB_NAME") or os.path.basename(command[0]))[:120],
        nprocs=int(nprocs) if nprocs.isdigit() else 1,
        heroes_ids=ids,
    )


@dataclass
class Totals:
    """Running integrals over the step; ``estimated`` collects the columns that used an estimate."""

    time_s: float = 0.0
    pck_j: float = 0.0
    dram_j: float = 0.0
    dram_seen: bool = False
    gpu_j: float = 0.0
    dc_j: float = 0.0
    freq_x_t: float = 0.0
    util_x_t: float = 0.0
    max_dc_w: float | None = None
    min_dc_w: float | None = None
    io_read: int = 0
    io_write: int = 0
    gpu: dict[int, dict[str, float]] = field(default_factory=dict)
    estimated: set[str] = field(default_factory=set)


class Collector:
    """Samples one node for one step. Sources are injectable so tests can fake sysfs, /proc and NVML."""

    def __init__(self, out_dir: str, info: StepInfo, interval: float = 1.0,
                 powercap_root: str = DEFAULT_POWERCAP_ROOT, rapl_opener: Opener = read_text,
                 nvml: Any | None = None, use_nvml: bool = True, environ: dict | None = None,
                 proc: str = "/proc", sys_cpu: str = "/sys/devices/system/cpu",
                 clock: Callable[[], float] = time.time, log: Callable[[str], None] | None = None,
                 progress_path: str | None = None) -> None:
        self.out_dir = out_dir
        self.progress_path = progress_path
        self.info = info
        self.interval = interval
        self.proc = proc
        self.clock = clock
        self.log = log or (lambda msg: print(f"heroes_energy.collect: {msg}", file=sys.stderr))
        self.rapl = RaplReader(root=powercap_root, opener=rapl_opener)
        env = os.environ if environ is None else environ
        self.gpus = NvmlSampler(nvml=nvml, selection=allowed_gpus(env)) if use_nvml else NvmlSampler()
        self._use_nvml = use_nvml
        self.freq = FrequencySource(sys_cpu=sys_cpu, proc=proc)
        self.cpu = read_cpu_info(proc)
        self.tdp: TdpModel = tdp_for(self.cpu.model, os.environ if environ is None else environ)
        self.io = TreeIo(proc)
        self.totals = Totals()
        base = f"heroes.{info.job_id}.{info.step_id}.{info.node}"
        self.app_path = os.path.join(out_dir, base + ".csv")
        self.samples_path = os.path.join(out_dir, base + ".samples.csv")
        self.start_time = 0.0
        self.end_time = 0.0
        self.root_pid: int | None = None

    def start(self) -> None:
        """Open the sources, take their baselines and write the sample file header."""
        os.makedirs(self.out_dir, exist_ok=True)
        if self.progress_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.progress_path)), exist_ok=True)
        self.rapl.open()
        if not self.rapl.available:
            self.log(f"{self.rapl.reason}; CPU power is estimated from utilization and TDP "
                     f"({self.tdp.tdp_w:g} W, {self.tdp.source}) and marked estimated")
        if self._use_nvml:
            self.gpus.open()
        self._fixed_freq = None if self.freq.measured else self.freq.cpuinfo_khz()
        self.def_freq_khz = self.freq.default_khz()
        self._cpu_prev = read_cpu_times(self.proc)
        self.start_time = self._last_t = self.clock()
        self.samples = SampleWriter(self.samples_path)

    def set_root(self, root_pid: int) -> None:
        """The wrapped command's pid, once it exists (its I/O is sampled from then on)."""
        self.root_pid = root_pid

    def sample(self) -> dict[str, Any]:
        """Measure the interval since the previous sample, add it to the totals and log a sample row."""
        now = self.clock()
        dt = max(1e-6, now - self._last_t)
        self._last_t = now
        estimated: list[str] = []

        cpu_now = read_cpu_times(self.proc)
        util = utilization(self._cpu_prev, cpu_now)
        self._cpu_prev = cpu_now

        if self._fixed_freq is not None:
            freq = self._fixed_freq
            estimated.append("AVG_CPUFREQ_KHZ")
        else:
            freq = self.freq.average_khz()

        reading = self.rapl.read()
        if reading.package_j is not None:
            pck_w = reading.package_j / dt
        else:
            pck_w = cpu_power_w(util, self.tdp, self.cpu.logical_cpus, self.cpu.sockets)
            estimated.append("PCK_POWER_W")
        dram_w = reading.dram_j / dt if reading.dram_j is not None else None

        gpu_samples: list[GpuSample] = self.gpus.sample(dt) if self.gpus.available else []
        gpu_j = sum(g.energy_j for g in gpu_samples if g.energy_j is not None)
        gpu_w = gpu_j / dt if gpu_samples else None

        dc_w = pck_w + (dram_w or 0.0) + (gpu_w or 0.0)
        if "PCK_POWER_W" in estimated:
            estimated.append("DC_NODE_POWER_W")

        read_b = write_b = 0
        if self.root_pid is not None:
            read_b, write_b = self.io.delta(process_tree(self.root_pid, self.proc))

        self._accumulate(dt, util, freq, pck_w, dram_w, gpu_j, dc_w, gpu_samples, read_b, write_b, estimated)
        row = {
            "TIMESTAMP": f"{now:.3f}",
            "ELAPSED_SEC": f"{now - self.start_time:.3f}",
            "NODENAME": self.info.node,
            "JOBID": self.info.job_id,
            "STEPID": self.info.step_id,
            "CPU_UTIL": f"{util * 100:.1f}",
            "AVG_CPUFREQ_KHZ": _num(freq, 0),
            "PCK_POWER_W": _num(pck_w, 2),
            "DRAM_POWER_W": _num(dram_w, 2),
            "GPU_POWER_W": _num(gpu_w, 2),
            "DC_NODE_POWER_W": _num(dc_w, 2),
            "GPU_UTIL_PERC": _num(_mean([g.util_perc for g in gpu_samples]), 1),
            "GPU_MEM_USED_MB": _num(_sum([g.mem_used_mb for g in gpu_samples]), 1),
            "GPU_POWER_W_EACH": ",".join(_num(g.power_w, 2) for g in gpu_samples),
            "GPU_FREQ_KHZ_EACH": ",".join(_num(g.sm_clock_khz, 0) for g in gpu_samples),
            "IO_READ_MBS": f"{read_b / 1e6 / dt:.3f}",
            "IO_WRITE_MBS": f"{write_b / 1e6 / dt:.3f}",
            C.ESTIMATED_COLUMN: ",".join(estimated),
        }
        self.samples.write(row)
        self.write_progress(dc_w)
        return row

    def write_progress(self, power_w: float | None, final: bool = False) -> None:
        """The totals so far into ``progress_path`` (if asked for). A failed write is logged and sampling
        goes on: the files at exit are the record, this is only the running view."""
        if not self.progress_path:
            return
        t = self.totals
        try:
            write_progress(self.progress_path, {
                "job_id": self.info.job_id, "step_id": self.info.step_id, "node": self.info.node,
                "time_s": round(t.time_s, 3), "energy_j": round(t.dc_j, 3),
                "power_w": None if power_w is None else round(power_w, 2), "estimated": sorted(t.estimated),
                "updated": round(self._last_t, 3), "final": final})
        except OSError as exc:
            self.log(f"progress file not written ({exc.strerror or exc})")

    def _accumulate(self, dt, util, freq, pck_w, dram_w, gpu_j, dc_w, gpu_samples, read_b, write_b, estimated):
        t = self.totals
        t.time_s += dt
        t.pck_j += pck_w * dt
        if dram_w is not None:
            t.dram_j += dram_w * dt
            t.dram_seen = True
        t.gpu_j += gpu_j
        t.dc_j += dc_w * dt
        t.freq_x_t += (freq or 0.0) * dt
        t.util_x_t += util * dt
        t.max_dc_w = dc_w if t.max_dc_w is None else max(t.max_dc_w, dc_w)
        t.min_dc_w = dc_w if t.min_dc_w is None else min(t.min_dc_w, dc_w)
        t.io_read += read_b
        t.io_write += write_b
        for g in gpu_samples:
            acc = t.gpu.setdefault(g.index, {"energy_j": 0.0, "t": 0.0, "freq": 0.0, "mem_freq": 0.0,
                                             "util": 0.0, "mem_util": 0.0})
            acc["energy_j"] += g.energy_j or 0.0
            acc["t"] += dt
            acc["freq"] += (g.sm_clock_khz or 0.0) * dt
            acc["mem_freq"] += (g.mem_clock_khz or 0.0) * dt
            acc["util"] += (g.util_perc or 0.0) * dt
            acc["mem_util"] += (g.mem_util_perc or 0.0) * dt
        t.estimated.update(estimated)

    def finish(self, rusage: Any | None = None) -> str:
        """Write the application CSV for the whole step and close the sample file. Returns its path."""
        self.end_time = self._last_t
        self.samples.close()
        self.gpus.close()
        row = self.app_values(rusage)
        write_app_csv(self.app_path, [format_app_row(row)])
        self.write_progress(None, final=True)
        return self.app_path

    def app_values(self, rusage: Any | None = None) -> dict[str, Any]:
        """The step's EAR application row as column -> value (None = not measured, written empty)."""
        t, info = self.totals, self.info
        secs = max(t.time_s, 1e-6)
        dc_w = t.dc_j / secs
        pck_w = t.pck_j / secs
        dram_w = t.dram_j / secs if t.dram_seen else None
        avg_freq = t.freq_x_t / secs if t.freq_x_t else None
        if rusage is not None:
            io_bytes = (rusage.ru_inblock + rusage.ru_oublock) * 512
        else:
            io_bytes = t.io_read + t.io_write
        estimated = set(t.estimated)
        if "DC_NODE_POWER_W" in estimated:
            estimated.update({"NODEMGR_DC_NODE_POWER_W", "NODEMGR_MAX_DC_POWER_W", "NODEMGR_MIN_DC_POWER_W",
                              "MAX_POWER_W"})
        if "PCK_POWER_W" in estimated:
            estimated.add("NODEMGR_PCK_POWER_W")
        if "AVG_CPUFREQ_KHZ" in estimated:
            estimated.update({"NODEMGR_AVG_CPUFREQ_KHZ", "DEF_FREQ_KHZ", "NODEMGR_DEF_FREQ_KHZ", "JOB_DEF_FREQ"})
        gpus = [t.gpu[i] for i in sorted(t.gpu)]

        def per_gpu(key: str, digits: int, energy: bool = False) -> str | None:
            if not gpus:
                return None
            vals = [(g["energy_j"] if energy else g[key]) / max(g["t"], 1e-6) for g in gpus]
            return ",".join(_num(v, digits) for v in vals)

        values: dict[str, Any] = {name: None for name in C.earlite_app_columns()}
        values.update(info.heroes_ids)
        values.update({
            "MAX_POWER_W": _num(t.max_dc_w, 2),
            "JOBID": info.job_id, "STEPID": info.step_id, "USERID": info.user, "GROUPID": info.group,
            "ACCOUNTID": info.account, "JOBNAME": info.job_name, "ENERGY_TAG": "",
            "JOB_START_TIME": str(int(self.start_time)), "JOB_END_TIME": str(int(self.end_time)),
            "JOB_START_DATE": _date(self.start_time), "JOB_END_DATE": _date(self.end_time),
            "JOB_EARL_START_TIME": "0", "JOB_EARL_END_TIME": "0", "POLICY": "NP", "POLICY_TH": "0.00",
            "JOB_NPROCS": str(info.nprocs), "JOB_TYPE": "0", "JOB_DEF_FREQ": _num(self.def_freq_khz, 0),
            "EARL_ENABLED": "0", "EAR_LEARNING_PHASE": "0", "NODENAME": info.node,
            "AVG_CPUFREQ_KHZ": _num(avg_freq, 0), "DEF_FREQ_KHZ": _num(self.def_freq_khz, 0),
            "TIME_SEC": f"{secs:.3f}", "IO_MBS": f"{io_bytes / 1e6 / secs:.4f}",
            "DC_NODE_POWER_W": _num(dc_w, 2), "DRAM_POWER_W": _num(dram_w, 2), "PCK_POWER_W": _num(pck_w, 2),
            "CPU_UTIL": f"{t.util_x_t / secs * 100:.0f}",
            "GPU0_POWER_W": per_gpu("", 2, energy=True), "GPU0_FREQ_KHZ": per_gpu("freq", 0),
            "GPU0_MEM_FREQ_KHZ": per_gpu("mem_freq", 0), "GPU0_UTIL_PERC": per_gpu("util", 0),
            "GPU0_MEM_UTIL_PERC": per_gpu("mem_util", 0),
            "NODEMGR_DC_NODE_POWER_W": _num(dc_w, 2), "NODEMGR_DRAM_POWER_W": _num(dram_w, 2),
            "NODEMGR_PCK_POWER_W": _num(pck_w, 2), "NODEMGR_MAX_DC_POWER_W": _num(t.max_dc_w, 2),
            "NODEMGR_MIN_DC_POWER_W": _num(t.min_dc_w, 2), "NODEMGR_TIME_SEC": f"{secs:.3f}",
            "NODEMGR_AVG_CPUFREQ_KHZ": _num(avg_freq, 0), "NODEMGR_DEF_FREQ_KHZ": _num(self.def_freq_khz, 0),
            C.ESTIMATED_COLUMN: ",".join(name for name in C.earlite_app_columns() if name in estimated),
        })
        return values


def _num(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _date(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _wait_until_exit_or(pidfd: int | None, pid: int, timeout: float) -> bool:
    """Block up to ``timeout`` s; True when the child has exited (pidfd readable)."""
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))
    deadline = time.monotonic() + timeout  # no pidfd (old kernel): coarse polling
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    return False


def _guarded(collector: Collector, what: str, action: Callable[[], Any]) -> bool:
    """Run one collector action; a failure is logged and monitoring stops, the step never suffers."""
    try:
        action()
        return True
    except Exception as exc:  # the energy record is best effort; the step's exit code is not
        collector.log(f"{what} failed ({type(exc).__name__}: {exc}); energy monitoring stopped for this step")
        return False


def run(command: list[str], collector: Collector) -> int:
    """Run ``command`` under ``collector``; returns its exit code (dies of its signal if it was killed).

    A collector failure (unwritable output directory, unreadable /proc ...) is logged and the command
    runs on unmonitored: energy accounting must never change a step's outcome.
    """
    if shutil.which(command[0]) is None:
        print(f"heroes_energy.collect: command not found or not executable: {command[0]}", file=sys.stderr)
        return 127
    # baselines first, so the step's first instructions are inside the measured window
    monitoring = _guarded(collector, "starting the collector", collector.start)
    child = subprocess.Popen(command)

    def forward(signum, _frame):
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        collector.set_root(child.pid)
        try:
            pidfd = os.pidfd_open(child.pid)
        except (AttributeError, OSError):
            pidfd = None
        next_at = time.monotonic() + collector.interval
        while not _wait_until_exit_or(pidfd, child.pid, next_at - time.monotonic() if monitoring else 3600):
            if monitoring:
                monitoring = _guarded(collector, "sampling", collector.sample)
            next_at += collector.interval
            if next_at < time.monotonic():  # fell behind (suspended?): don't burst, restart the cadence
                next_at = time.monotonic() + collector.interval
        if monitoring:  # the last partial interval, so energy covers the whole step
            monitoring = _guarded(collector, "sampling", collector.sample)
        _, status, rusage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if pidfd is not None:
            os.close(pidfd)
        if monitoring:
            _guarded(collector, "writing the application CSV", lambda: collector.finish(rusage))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    code = child.returncode
    if code < 0:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL/SIGSTOP cannot be handled, so they are at their default already
        os.kill(os.getpid(), -code)  # die of the same signal so the caller sees what happened
        return 128 - code
    return code


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options before ``--``, the wrapped command after it."""
    if "--" not in argv:
        raise SystemExit("usage: python -m heroes_energy.collect --out DIR [--interval S] "
                         "[--ids KEY=VALUE ...] -- CMD ARGS...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m heroes_energy.collect",
                                     description="EAR-lite energy collector around one job step")
    parser.add_argument("--out", required=True, help="directory for the application and sample CSVs")
    parser.add_argument("--interval", type=float, default=1.0, help="sampling period in seconds")
    parser.add_argument("--ids", nargs="*", default=[], help="HEROES ids as KEY=VALUE "
                        "(instance, template, user, org_name, org_id); default from HEROES_* env vars")
    parser.add_argument("--job-id", help="job id (default SLURM_JOB_ID, else the collector's pid)")
    parser.add_argument("--step-id", help="step id (default SLURM_STEP_ID, else 0)")
    parser.add_argument("--node", help="node name (default: SLURMD_NODENAME, else the short hostname)")
    parser.add_argument("--powercap-root", default=os.environ.get("HEROES_POWERCAP_ROOT", DEFAULT_POWERCAP_ROOT),
                        help="powercap sysfs root (tests point it at a synthetic tree)")
    parser.add_argument("--no-gpu", action="store_true", help="do not sample GPUs even if pynvml is present")
    parser.add_argument("--progress", help="also keep the totals so far in this JSON file (replaced every sample)")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error("no command after --")
    if args.interval <= 0:
        parser.error("--interval must be positive")
    for name in ("job_id", "step_id"):
        value = getattr(args, name)
        if value is not None and not value.isdigit():
            parser.error(f"--{name.replace('_', '-')} must be a non-negative integer (EAR's ids are), got {value!r}")
    return args, command


def one_per_node(environ: dict) -> bool:
    """True for the task that monitors its node: srun starts one collector per task, but what they measure
    (RAPL, /proc/stat, GPUs) is the whole node's, and they would write the same file names. EAR reports
    from one rank likewise. The other tasks of the node run their command unmonitored."""
    return environ.get("SLURM_LOCALID", "0") == "0"


def main(argv: list[str] | None = None) -> int:
    args, command = parse_args(list(sys.argv[1:] if argv is None else argv))
    environ = dict(os.environ)
    if not one_per_node(environ):
        try:
            os.execvp(command[0], command)  # exits only on failure
        except OSError as exc:
            print(f"heroes_energy.collect: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
            return 127
    ids = heroes_ids_from(args.ids, environ)

    info = step_info(command, ids, environ, os.getpid(), args.job_id, args.step_id, args.node)
    collector = Collector(args.out, info, interval=args.interval, powercap_root=args.powercap_root,
                          use_nvml=not args.no_gpu, environ=environ, progress_path=args.progress)
    return run(command, collector)


if __name__ == "__main__":
    sys.exit(main())
