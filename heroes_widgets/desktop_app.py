"""The Desktop app (Voila: notebooks/desktop.ipynb): remote desktops on your clusters, in the page.

Start a desktop (cluster, partition, cores, memory, minutes, GPUs), see it queue, open it when it is ready:
the desktop shows in the page (noVNC, served by the HEROES service) with copy/paste both ways, the screen
following the window, a quality/compression setting and full screen. Several desktops at once; each row
shows its state, node, time left, core-hours, energy (the energy collector's on the node, marked
"measured"; "estimated" with the reason where it is not) and cost so far; "End" cancels its Slurm job. "Share" gives
another member of your organization a view-only link that expires; desktops shared with you are listed
with "Watch".

How the page connects: the kernel asks the API (your hub token) for a one-time ticket and puts it in the
embedded page's URL fragment, which browsers never send to a server; the page spends it on the websocket.
The page's query may say ``?instance=<id>`` (the Monitor app's "Visualize": a desktop in that run's folder)
or ``?share=<id>`` (a view-only link).

Widgets a browser test needs carry CSS classes ``heroes-desktop-*``.
"""
from __future__ import annotations

import html
import os
import threading
from urllib.parse import parse_qs

import ipywidgets as widgets

from .api_client import ApiClient, ServiceCallError
from .ui import css, message

API = "/organization/visualization"
LIVE = {"SUBMITTING", "PENDING", "RUNNING"}


def query_value(name: str, env: dict | None = None) -> str | None:
    """A value of the page's query (Voila hands the query string to the kernel as QUERY_STRING)."""
    env = os.environ if env is None else env
    values = parse_qs(env.get("QUERY_STRING", "")).get(name)
    return values[0] if values else None


def _minutes(seconds) -> str:
    if seconds is None:
        return "–"
    return f"{int(seconds) // 60} min {int(seconds) % 60:02d} s"


def energy_text(usage: dict) -> str:
    """The energy so far and where it comes from: the collector on the node (measured, or its own estimate
    where the node has no readable RAPL counter), or the cluster's power profile before its first sample."""
    value = float(usage.get("energy_kwh") or 0.0)
    kwh = f"{value:.3f} kWh" if value >= 1 else f"{value * 1000:.2f} Wh"  # a short desktop draws a few Wh
    source = usage.get("energy_source") or "power profile"
    if source == "power profile":
        label = "estimated from the power profile: no collector output yet"
    else:
        label = "collector's record" if source == "energy record" else "collector"
        label += "; CPU power estimated: no RAPL on the node" if usage.get("energy_estimated") else ", measured"
    note = html.escape(usage.get("energy_note") or label, quote=True)
    text = f"{html.escape(kwh)} ({html.escape(label, quote=False)})"
    return f"<span class='heroes-desktop-energy' title='{note}'>{text}</span>"


def describe(d: dict) -> str:
    """One desktop as a line of HTML (escaped: every value comes from the API)."""
    usage = d.get("usage") or {}
    cost = f"{usage['cost']:.4f} {usage.get('currency', '')}" if usage.get("cost") is not None else "–"
    state = d["state"] + (" (ready)" if d.get("ready") else "") + \
        (f" – {d['end_reason']}" if d.get("end_reason") else "") + (f" – {d['reason']}" if d.get("reason") else "")
    parts = [f"<b>{html.escape(d['id'][:8])}</b>", html.escape(d["cluster"]), html.escape(state),
             f"node {html.escape(d.get('node') or '–')}", f"time left {_minutes(usage.get('time_left_s'))}",
             f"{usage.get('core_hours', 0):.3f} core-h", energy_text(usage),
             f"cost {html.escape(cost)}"]
    if d.get("instance_id"):
        parts.append(f"run {html.escape(d['instance_id'][:8])}")
    return " · ".join(parts)


class DesktopApp:
    def __init__(self, client: ApiClient | None = None, refresh_s: float = 2.0, auto: bool = True):
        self.client = client or ApiClient()
        self.refresh_s = refresh_s
        self.desktops: list[dict] = []
        self.opened: str | None = None
        self._wanted_open: str | None = None
        self._lock = threading.Lock()
        self.cluster = css(widgets.Dropdown(description="Cluster", options=[]), "heroes-desktop-cluster")
        self.partition = css(widgets.Text(description="Partition", placeholder="default"), "heroes-desktop-partition")
        self.cores = css(widgets.BoundedIntText(description="Cores", value=1, min=1, max=1024), "heroes-desktop-cores")
        self.memory = css(widgets.BoundedIntText(description="Memory MB", value=1024, min=128, max=4194304),
                          "heroes-desktop-memory")
        self.minutes = css(widgets.BoundedIntText(description="Minutes", value=60, min=1, max=10080),
                           "heroes-desktop-minutes")
        self.gpus = css(widgets.BoundedIntText(description="GPUs", value=0, min=0, max=64), "heroes-desktop-gpus")
        self.start_button = css(widgets.Button(description="Start desktop", button_style="primary", icon="desktop"),
                                "heroes-desktop-start")
        self.status = css(widgets.HTML(""), "heroes-desktop-status")
        self.list_box = css(widgets.VBox([]), "heroes-desktop-list")
        self.shared_box = css(widgets.VBox([]), "heroes-desktop-shared")
        self.viewer = css(widgets.HTML(""), "heroes-desktop-viewer")
        self.start_button.on_click(lambda _b: self.start())
        self.root = widgets.VBox([
            widgets.HBox([self.cluster, self.partition]), widgets.HBox([self.cores, self.memory]),
            widgets.HBox([self.minutes, self.gpus, self.start_button]), self.status,
            widgets.HTML("<h4>Your desktops</h4>"), self.list_box,
            widgets.HTML("<h4>Shared with you (view only)</h4>"), self.shared_box, self.viewer])
        if auto:
            self.load_clusters()
            self.refresh()
            self._from_query()
            threading.Thread(target=self._poll, daemon=True, name="desktop-app-poll").start()

    def display(self):
        from IPython.display import display

        display(self.root)
        return self

    # --- calls ------------------------------------------------------------------------------------------
    def _say(self, text: str, error: bool = False) -> None:
        self.status.value = message(text, error)

    def load_clusters(self) -> None:
        try:
            clusters = self.client.call("GET", "/organization/cluster/") or []
        except ServiceCallError as exc:
            self._say(f"cannot list clusters: {exc.detail}", True)
            return
        self.cluster.options = [c["name"] for c in clusters]

    def start(self, instance_id: str | None = None) -> dict | None:
        body = {"cluster": self.cluster.value or "", "partition": self.partition.value.strip(),
                "cores": self.cores.value, "memory_mb": self.memory.value, "minutes": self.minutes.value,
                "gpus": self.gpus.value}
        if instance_id:
            body = {**body, "instance_id": instance_id, "cluster": ""}
        self._say("submitting…")
        try:
            made = self.client.call("POST", f"{API}/session", json=body)
        except ServiceCallError as exc:
            self._say(f"not started: {exc.detail}", True)
            return None
        start = made.get("expected_start")
        self._say(f"desktop {made['id'][:8]} submitted as job {made['job_id']} on {made['cluster']}"
                  + (f"; Slurm expects it to start at {start[:19].replace('T', ' ')} UTC" if start else "")
                  + "; it opens here when it is ready")
        self._wanted_open = made["id"]
        self.refresh()
        return made

    def open(self, session_id: str) -> None:
        try:
            grant = self.client.call("POST", f"{API}/session/{session_id}/ticket")
        except ServiceCallError as exc:
            self._say(f"cannot open {session_id[:8]}: {exc.detail}", True)
            return
        self._show(grant["view_url"], session_id)

    def watch(self, share_id: str) -> None:
        try:
            grant = self.client.call("POST", f"{API}/share/{share_id}/ticket")
        except ServiceCallError as exc:
            self._say(f"cannot watch: {exc.detail}", True)
            return
        self._show(grant["view_url"], share_id)

    def _show(self, url: str, key: str) -> None:
        self.opened = key
        self.viewer.value = (f"<iframe class='heroes-desktop-frame' src='{html.escape(url, quote=True)}' "
                             "style='width:100%;height:760px;border:1px solid #888' "
                             "allow='clipboard-read; clipboard-write; fullscreen'></iframe>")

    def end(self, session_id: str) -> None:
        try:
            self.client.call("DELETE", f"{API}/session/{session_id}")
        except ServiceCallError as exc:
            self._say(f"cannot end {session_id[:8]}: {exc.detail}", True)
            return
        if self.opened == session_id:
            self.viewer.value, self.opened = "", None
        self._say(f"desktop {session_id[:8]} ended")
        self.refresh()

    def share(self, session_id: str, viewer: str, minutes: float) -> None:
        try:
            got = self.client.call("POST", f"{API}/session/{session_id}/share",
                                   json={"viewer": viewer.strip(), "minutes": minutes})
        except ServiceCallError as exc:
            self._say(f"not shared: {exc.detail}", True)
            return
        link = f"{os.environ.get('JUPYTERHUB_BASE_URL', '/')}hub/user-redirect/voila/render/desktop.ipynb?share={got['id']}"
        self._say(f"view-only link for {viewer or 'any member'} until {got['expires_at'][:19]} UTC: {link}")

    # --- the lists ----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        try:
            desktops = self.client.call("GET", f"{API}/session") or []
            shared = self.client.call("GET", f"{API}/shared") or []
        except ServiceCallError as exc:
            self._say(f"cannot list desktops: {exc.detail}", True)
            return
        with self._lock:
            self.desktops = desktops
            self.list_box.children = [self._row(d) for d in desktops[:20]]
            self.shared_box.children = [self._shared_row(s) for s in shared]
        wanted = self._wanted_open
        if wanted and any(d["id"] == wanted and d.get("ready") for d in desktops):
            self._wanted_open = None
            self.open(wanted)

    def _row(self, d: dict):
        label = css(widgets.HTML(describe(d)), "heroes-desktop-row")
        if d["state"] not in LIVE:
            return label
        open_button = css(widgets.Button(description="Open", disabled=not d.get("ready"), icon="eye"),
                          "heroes-desktop-open")
        end_button = css(widgets.Button(description="End", button_style="danger", icon="stop"), "heroes-desktop-end")
        viewer = css(widgets.Text(placeholder="share with (user name)", layout=widgets.Layout(width="180px")),
                     "heroes-desktop-share-user")
        minutes = css(widgets.BoundedFloatText(value=60, min=0.1, max=1440, layout=widgets.Layout(width="80px")),
                      "heroes-desktop-share-minutes")
        share_button = css(widgets.Button(description="Share view-only", icon="share"), "heroes-desktop-share")
        open_button.on_click(lambda _b, i=d["id"]: self.open(i))
        end_button.on_click(lambda _b, i=d["id"]: self.end(i))
        share_button.on_click(lambda _b, i=d["id"]: self.share(i, viewer.value, minutes.value))
        return widgets.VBox([label, widgets.HBox([open_button, end_button, viewer, minutes, share_button])])

    def _shared_row(self, s: dict):
        button = css(widgets.Button(description="Watch", icon="eye"), "heroes-desktop-watch")
        button.on_click(lambda _b, i=s["id"]: self.watch(i))
        text = f"{html.escape(s['owner'])}'s desktop on {html.escape(s['cluster'])}, until {s['expires_at'][:19]} UTC"
        return widgets.HBox([widgets.HTML(text), button])

    def _from_query(self) -> None:
        instance, share = query_value("instance"), query_value("share")
        if share:
            self.watch(share)
        elif instance:
            self.start(instance_id=instance)

    def _poll(self) -> None:
        import time

        while True:
            time.sleep(self.refresh_s)
            if any(d["state"] in LIVE for d in self.desktops) or self._wanted_open:
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - a poll must never kill the app; the next one retries
                    pass
