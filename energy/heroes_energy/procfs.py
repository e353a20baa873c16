"""CPU utilization, CPU frequency, process tree and I/O from /proc and /sys (standard library only).

Roots are parameters so unit tests can point them at synthetic trees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class CpuTimes:
    """Aggregate jiffies from the first line of /proc/stat."""

    busy: int
    total: int


def read_cpu_times(proc: str = "/proc") -> CpuTimes:
    """Busy and total jiffies; idle and iowait count as not busy (as top and EAR's cpu_util do)."""
    with open(os.path.join(proc, "stat"), "r", encoding="ascii") as handle:
        first = handle.readline().split()
    values = [int(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice are inside user/nice]
    total = sum(values[:8])
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return CpuTimes(busy=total - idle, total=total)


def utilization(previous: CpuTimes, current: CpuTimes) -> float:
    """Node CPU utilization between two readings, as a fraction 0..1."""
    total = current.total - previous.total
    if total <= 0:
        return 0.0
    return max(0.0, min(1.0, (current.busy - previous.busy) / total))


@dataclass
class FrequencySource:
    """Where the node's CPU frequency comes from.

    ``measured`` is True only when cpufreq reports the running frequency (``scaling_cur_freq``).
    Otherwise (VMs, no cpufreq driver) the frequency is the selected/nominal one from
    /proc/cpuinfo, which EAR-lite also uses, and every value derived from it is an estimate.
    """

    sys_cpu: str = "/sys/devices/system/cpu"
    proc: str = "/proc"

    def _cpufreq_files(self, leaf: str) -> list[str]:
        paths = []
        try:
            entries = os.listdir(self.sys_cpu)
        except OSError:
            return paths
        for entry in entries:
            if entry.startswith("cpu") and entry[3:].isdigit():
                path = os.path.join(self.sys_cpu, entry, "cpufreq", leaf)
                if os.path.exists(path):
                    paths.append(path)
        return paths

    def __post_init__(self) -> None:
        self._cur = self._cpufreq_files("scaling_cur_freq")
        self.measured = bool(self._cur)

    def average_khz(self) -> float | None:
        """Mean current frequency in kHz (measured), or the cpuinfo frequency (estimated)."""
        if self._cur:
            values = []
            for path in self._cur:
                try:
                    with open(path, "r", encoding="ascii") as handle:
                        values.append(int(handle.read().strip()))
                except (OSError, ValueError):
                    continue
            if values:
                return sum(values) / len(values)
        return self.cpuinfo_khz()

    def cpuinfo_khz(self) -> float | None:
        """Mean of the "cpu MHz" lines of /proc/cpuinfo, in kHz."""
        values = []
        try:
            with open(os.path.join(self.proc, "cpuinfo"), "r", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.startswith("cpu MHz"):
                        values.append(float(line.split(":", 1)[1]) * 1000.0)
        except (OSError, ValueError):
            return None
        return sum(values) / len(values) if values else None

    def default_khz(self) -> float | None:
        """The nominal/selected frequency: cpufreq's maximum scaling frequency, else cpuinfo's."""
        for leaf in ("scaling_max_freq", "cpuinfo_max_freq"):
            for path in self._cpufreq_files(leaf)[:1]:
                try:
                    with open(path, "r", encoding="ascii") as handle:
                        return float(handle.read().strip())
                except (OSError, ValueError):
                    continue
        return self.cpuinfo_khz()


@dataclass
class CpuInfo:
    """The CPU model and topology as far as /proc/cpuinfo shows it."""

    model: str
    logical_cpus: int
    sockets: int


def read_cpu_info(proc: str = "/proc") -> CpuInfo:
    """Model name, number of logical CPUs and of sockets (distinct ``physical id``)."""
    model = "unknown"
    cpus = 0
    sockets: set[str] = set()
    try:
        with open(os.path.join(proc, "cpuinfo"), "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "processor":
                    cpus += 1
                elif key == "model name" and model == "unknown":
                    model = value.strip()
                elif key == "physical id":
                    sockets.add(value.strip())
    except OSError:
        pass
    return CpuInfo(model=model, logical_cpus=cpus or (os.cpu_count() or 1), sockets=max(1, len(sockets)))


def _ppid_of(proc: str, pid: str) -> int | None:
    try:
        with open(os.path.join(proc, pid, "stat"), "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    rest = data[data.rfind(b")") + 2:].split(b" ", 2)
    try:
        return int(rest[1])
    except (IndexError, ValueError):
        return None


def process_tree(root_pid: int, proc: str = "/proc") -> list[int]:
    """``root_pid`` and all its live descendants (one scan of /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        ppid = _ppid_of(proc, entry)
        if ppid is not None:
            parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, ()))
    return tree


def read_io(pid: int, proc: str = "/proc") -> tuple[int, int] | None:
    """Storage bytes read and written by one process (``read_bytes``/``write_bytes``), or None."""
    read_b = write_b = None
    try:
        with open(os.path.join(proc, str(pid), "io"), "r", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("read_bytes:"):
                    read_b = int(line.split()[1])
                elif line.startswith("write_bytes:"):
                    write_b = int(line.split()[1])
    except (OSError, ValueError):
        return None
    if read_b is None or write_b is None:
        return None
    return read_b, write_b


class TreeIo:
    """I/O rate of a process tree between samples.

    Each live process keeps its last counters. /proc/<pid>/io adds reaped children into their parent,
    so a short-lived grandchild may be counted twice in the timeline and a process that vanished
    between samples loses its last interval; the step's totals come from the wrapped child's
    rusage instead, which is exact for everything it waited for.
    """

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.last: dict[int, tuple[int, int]] = {}

    def delta(self, pids: list[int]) -> tuple[int, int]:
        """Bytes read and written by the tree since the previous call."""
        read_total = write_total = 0
        current: dict[int, tuple[int, int]] = {}
        for pid in pids:
            counters = read_io(pid, self.proc)
            if counters is None:
                continue
            current[pid] = counters
            before = self.last.get(pid, (0, 0))  # a new process did all its I/O since the last sample
            read_total += max(0, counters[0] - before[0])
            write_total += max(0, counters[1] - before[1])
        self.last = current
        return read_total, write_total
