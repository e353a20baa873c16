"""What each ``heroes`` user command does (the parser lives in :mod:`heroes_sdk.cli`).

Results go to stdout (a table, or JSON with ``--json``), progress and messages to stderr. Every command is
a thin layer over the SDK, so the command line and notebooks behave the same.
"""
from __future__ import annotations

import dataclasses
import getpass
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from . import credentials
from .cli import UsageError
from .client import Client
from .errors import AuthenticationError
from .errors import InstanceFailed
from .instance import Instance
from .session import Session, api_url


# --- output ---------------------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """A JSON-ready copy of SDK objects (dataclasses without their client and raw copies)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in ("client", "raw")}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def emit_json(value: Any) -> None:
    print(json.dumps(plain(value), indent=2, default=str))


def table(rows: Iterable[Iterable[Any]], header: list[str]) -> None:
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def client(args) -> Client:
    return Client(getattr(args, "url", None))


def parameters(args) -> dict:
    """Parameter values from ``--file`` (YAML/JSON) and ``key=value`` words (values read as YAML scalars)."""
    import yaml

    values: dict = {}
    if args.file:
        try:
            loaded = yaml.safe_load(Path(args.file).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot read parameters from {args.file}: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UsageError(f"{args.file} must hold a mapping of parameter names to values")
        values.update(loaded or {})
    for word in args.values:
        key, sep, text = word.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"parameter {word!r} is not key=value")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        values[key.strip()] = value if isinstance(value, (int, float, bool, str)) or value is None else text
    return values


# --- login ----------------------------------------------------------------------------------------------
def login(args) -> int:
    stored = credentials.load()
    url = args.url or os.environ.get("HEROES_API_URL") or (stored or {}).get("url") or "http://127.0.0.1:8000"
    username = args.username or input("user name: ").strip()
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
    if not password:
        raise UsageError("an empty password")
    record = credentials.keycloak_login(api_url(url), username, password)
    path = credentials.save(record)
    me = Client(record["url"]).me()
    print(f"logged in to {record['url']} as {me.username} ({me.organization or 'no organization'}); "
          f"tokens kept in {path} (mode 0600)", file=sys.stderr)
    return 0


def logout(args) -> int:
    record = credentials.load()
    if record is None:
        print("not logged in", file=sys.stderr)
        return 0
    try:
        Session(record["url"], credentials.refreshing_credential(record)).call(
            "POST", "/organization/auth/logout", json={"refresh_token": record.get("refresh_token")})
    except AuthenticationError:
        pass  # already expired: nothing left to end
    credentials.forget()
    print("logged out; stored tokens deleted", file=sys.stderr)
    return 0


def whoami(args) -> int:
    me = client(args).me()
    if args.json:
        emit_json(me)
    else:
        print(f"{me.username} ({me.organization or 'no organization'}; roles: {', '.join(me.roles)})")
    return 0


# --- look around ----------------------------------------------------------------------------------------
def clusters(args) -> int:
    found = client(args).clusters()
    if args.json:
        emit_json(found)
        return 0
    rows = []
    for c in found:
        rate = c.price.instance_type if c.price.kind == "cloud" else f"{c.price.per_core_hour:g}/core-h"
        for p in c.partitions or [None]:
            rows.append([c.name, p.name + ("*" if p.default else "") if p else "", p.nodes if p else "",
                         p.cpus_per_node if p else "", p.memory_mb if p else "", p.time_limit if p else "",
                         f"{c.price.kind} {c.price.currency} {rate}"])
    table(rows, ["cluster", "partition", "nodes", "cpus", "mem_mb", "time_limit", "price"])
    return 0


def templates(args) -> int:
    heroes = client(args)
    if args.name:
        template = heroes.template(args.name)
        if args.json:
            emit_json(template)
            return 0
        print(f"{template.name} v{template.version}: {template.title}\n{template.description}".rstrip())
        table([[p.name, p.type, "yes" if p.required else repr(p.default), p.min, p.max,
                ",".join(map(str, p.choices or []))] for p in template.parameters],
              ["parameter", "type", "required/default", "min", "max", "choices"])
        return 0
    found = heroes.templates(all_versions=args.all_versions)
    if args.json:
        emit_json(found)
    else:
        table([[t.name, t.version, t.title, t.id] for t in found], ["name", "version", "title", "id"])
    return 0


def decide(args) -> int:
    decision = client(args).decide(args.template, parameters(args), policy=args.policy, deadline_s=args.deadline,
                                   budget=args.budget, currency=args.currency, clusters=args.clusters)
    if args.json:
        emit_json(decision)
        return 0
    table([["*" if c.cluster == decision.choice else "", c.cluster, f"{c.wait_s:.0f}" if c.wait_s is not None
            else "", f"{c.run_s:.0f}", f"{c.energy_kwh:.4g}", "" if c.cost is None else f"{c.cost:.4g} {c.currency}",
            c.reason] for c in decision.candidates],
          ["", "cluster", "wait_s", "run_s", "energy_kwh", "cost", "reason"])
    print(f"\n{decision.policy}: {decision.choice or 'no cluster'} — {decision.reason}")
    return 0


# --- instances ------------------------------------------------------------------------------------------
def submit(args) -> int:
    heroes = client(args)
    inst = heroes.submit(args.template, parameters(args), cluster=args.cluster, name=args.name,
                         accept_rightsizing=args.accept_rightsizing, cpu_freq_khz=args.cpu_freq)
    if not args.json:
        print(inst.id, flush=True)
    print(f"submitted {inst.template_name} v{inst.template_version} to {inst.cluster}: {inst.id}", file=sys.stderr)
    if args.wait:
        inst.wait(timeout=args.timeout, progress=True)
        print(f"{inst.id}: {inst.state}" + (f" ({inst.reason})" if inst.reason else ""), file=sys.stderr)
        if not inst.ok and not args.json:
            raise InstanceFailed(inst)
    if args.json:
        emit_json(inst)
        if args.wait and not inst.ok:
            return 7
    return 0


def _show_instance(inst: Instance) -> None:
    print(f"{inst.id}  {inst.template_name} v{inst.template_version} on {inst.cluster}: {inst.state}"
          + (f" ({inst.reason})" if inst.reason else ""))
    table([[s.name, s.state, s.job_id, s.nodes, s.exit_code, s.max_rss_mb] for s in inst.steps],
          ["step", "state", "job", "nodes", "exit", "peak_mb"])
    if inst.events:
        print()
        table([[e.at.strftime("%H:%M:%S") if e.at else "", e.step, f"{e.from_state}->{e.to_state}", e.detail[:120]]
               for e in inst.events], ["at", "step", "change", "detail"])


def status(args) -> int:
    heroes = client(args)
    if args.instance:
        inst = heroes.instance(args.instance)
        emit_json(inst) if args.json else _show_instance(inst)
        return 0
    found = heroes.instances(state=args.state, limit=args.limit)
    if args.json:
        emit_json(found)
    else:
        table([[i.id, i.name, i.template_name, i.cluster, i.state,
                i.created_at.strftime("%Y-%m-%d %H:%M") if i.created_at else ""] for i in found],
              ["id", "name", "template", "cluster", "state", "created"])
    return 0


def logs(args) -> int:
    inst = client(args).instance(args.instance)
    if not args.follow:
        sys.stdout.write(inst.logs(args.step, tail=args.tail))
        return 0
    printed: dict[str, int] = {}
    while True:
        done = inst.done
        for step in [inst.step(args.step)] if args.step else inst.steps:
            if step.job_id is None and not step.done:
                continue
            text = inst.logs(step.name, tail=16 * 1024 * 1024)
            new = text[printed.get(step.name, 0):]
            for line in new.splitlines(keepends=True):
                sys.stdout.write(line if args.step else f"[{step.name}] {line}")
            printed[step.name] = len(text)
        sys.stdout.flush()
        if done:
            return 0
        time.sleep(2.0)
        inst.refresh()


def cancel(args) -> int:
    inst = client(args).cancel(args.instance)
    emit_json(inst) if args.json else print(f"{inst.id}: cancel requested ({inst.state})")
    return 0


def outputs_ls(args) -> int:
    inst = client(args).instance(args.instance)
    rows = [{"name": name, "key": o["key"], "size": o.get("size")} for name, o in zip(inst.output_keys(), inst.outputs)]
    if args.json:
        emit_json(rows)
    else:
        table([[r["name"], r["size"]] for r in rows], ["output", "bytes"])
    return 0


def outputs_get(args) -> int:
    inst = client(args).instance(args.instance)
    if args.output == "-":
        sys.stdout.buffer.write(inst.read_output(args.name))
        return 0
    path = inst.download_output(args.name, args.output or Path(args.name).name)
    print(path, file=sys.stderr)
    return 0


# --- data -----------------------------------------------------------------------------------------------
def data_buckets(args) -> int:
    found = client(args).data.buckets()
    emit_json(found) if args.json else table([[b.bucket, b.kind, b.name, b.access] for b in found],
                                             ["bucket", "kind", "name", "access"])
    return 0


def data_ls(args) -> int:
    listing = client(args).data.ls(args.prefix, bucket=args.bucket, recursive=args.recursive)
    if args.json:
        emit_json(listing)
        return 0
    table([[f, "", ""] for f in listing.folders] + [[o.key, o.size, o.last_modified.strftime("%Y-%m-%d %H:%M")
                                                     if o.last_modified else ""] for o in listing.objects],
          ["key", "bytes", "modified"])
    return 0


def data_put(args) -> int:
    if not Path(args.path).is_file():
        raise UsageError(f"{args.path} is not a file")
    stored = client(args).data.upload(args.path, args.key or Path(args.path).name, bucket=args.bucket,
                                      overwrite=not args.no_overwrite)
    print(f"{stored.bucket}/{stored.key} ({stored.size} bytes)")
    return 0


def data_get(args) -> int:
    heroes = client(args)
    if args.path == "-":
        sys.stdout.buffer.write(heroes.data.read(args.bucket, args.key))
        return 0
    print(heroes.data.download(args.bucket, args.key, args.path), file=sys.stderr)
    return 0


def data_rm(args) -> int:
    client(args).data.delete(args.key, bucket=args.bucket)
    return 0


# --- energy ---------------------------------------------------------------------------------------------
def energy(args) -> int:
    records = client(args).energy(instance_id=args.instance, limit=args.limit)
    if args.json:
        emit_json(records)
        return 0
    table([[r.cluster, r.job_id, r.step_id, r.template, f"{r.time_s or 0:.1f}", f"{r.energy_j:.1f}",
            "estimated" if r.estimated else "measured"] for r in records],
          ["cluster", "job", "step", "template", "time_s", "energy_j", "source"])
    if not records:
        print("no energy records" + (f" for instance {args.instance}" if args.instance else ""), file=sys.stderr)
    return 0

