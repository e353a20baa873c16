"""The Admin app's Clusters tab: the organization's clusters, enrollment, test connection, edit, remove.

Enrollment is the API's two steps, with the person in the middle: the gateway reads the host key the login
node presents, the admin types the fingerprint the site publishes (``ssh-keygen -lf`` on the node, or its
documentation) and only a match opens the cluster's settings; the service compares the key again when it
enrolls (409 for a different one). After enrolling, "test connection" runs at once and says, check by
check, what works (login, Slurm, partitions, work directory, SFTP, container runtime, sbatch, accounting).

Widgets a browser test needs carry CSS classes ``heroes-admin-*``.
"""
from __future__ import annotations

import html

import ipywidgets as widgets

from .admin_cluster_form import ClusterForm
from .admin_forms import NumberField, TextField, api_call, checks_html, merged
from .api_client import ApiClient, ServiceCallError
from .grid import Column, Table
from .ui import css

CLUSTERS = "/organization/admin/cluster/"
HOST_PATTERN = r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}"


def normalised_fingerprint(text: str) -> str:
    """``SHA256:abc`` as the API writes it, from what an admin pastes (with or without prefix or padding)."""
    text = "".join(text.split())
    if text.upper().startswith("SHA256:"):
        text = text[7:]
    return "SHA256:" + text.rstrip("=")


def cluster_rows(clusters: list[dict]) -> list[dict]:
    """The clusters as the table shows them."""
    return [dict(c, address=f"{c['host']}:{c['port']}",
                 offered=", ".join(p["name"] + ("*" if p.get("default") else "") for p in c.get("partitions") or []))
            for c in clusters]


COLUMNS = [Column("name", "Cluster", 120), Column("address", "Login node", 140),
           Column("identity_mode", "Identity", 100), Column("container_runtime", "Runtime", 100),
           Column("offered", "Partitions (*default)", 150), Column("relative_speed", "Speed", 70),
           Column("slurm_version", "Slurm", 70), Column("host_key_fingerprint", "Host key", 220),
           Column("description", "Description", 200)]


class ClustersTab:
    def __init__(self, client: ApiClient, report):
        self.client, self.report = client, report
        self.clusters: list[dict] = []
        self.scanned: dict | None = None  # the host key read in step 1, until host or port change
        self.editing: dict | None = None  # the cluster the edit form shows
        self.table = Table(COLUMNS, "heroes-admin-clusters", empty="no cluster enrolled yet: enroll one below",
                           on_select=lambda row: setattr(self.pick, "value", row["id"]))
        self.pick = css(widgets.Dropdown(options=[], description="Cluster"), "heroes-admin-cluster")
        test = css(widgets.Button(description="Test connection", icon="plug"), "heroes-admin-test")
        edit = css(widgets.Button(description="Edit"), "heroes-admin-edit")
        remove = css(widgets.Button(description="Remove", button_style="danger"), "heroes-admin-remove-cluster")
        test.on_click(lambda _b: self.test(self.pick.value))
        edit.on_click(lambda _b: self.start_edit(self.pick.value))
        remove.on_click(lambda _b: self.ask_remove(self.pick.value))
        self.checks = css(widgets.HTML(""), "heroes-admin-checks")
        self.confirm_remove = self._confirm_box()
        self.edit_form = ClusterForm(editing=True)
        read = css(widgets.Button(description="Read partitions from the cluster", layout=widgets.Layout(width="auto")),
                   "heroes-admin-read-partitions")
        save = css(widgets.Button(description="Save changes", button_style="primary"), "heroes-admin-save-cluster")
        cancel = widgets.Button(description="Cancel")
        read.on_click(lambda _b: self.read_partitions())
        save.on_click(lambda _b: self.save_edit())
        cancel.on_click(lambda _b: self._hide(self.edit_box))
        self.edit_title = widgets.HTML("")
        self.edit_box = css(widgets.VBox([self.edit_title, self.edit_form.widget, widgets.HBox([read, save, cancel])],
                                         layout=widgets.Layout(display="none", border="1px solid #ccc",
                                                               padding="6px")), "heroes-admin-edit-box")
        self.widget = widgets.VBox([self.table.widget, widgets.HBox([self.pick, test, edit, remove]),
                                    self.confirm_remove, self.checks, self.edit_box, self._enroll_section()])

    # --- enrollment ------------------------------------------------------------------------------------
    def _enroll_section(self) -> widgets.Widget:
        self.host = TextField("Login node host", "host", pattern=HOST_PATTERN, rule="a host name or IP address")
        self.port = NumberField("SSH port", "port", minimum=1, maximum=65535, integer=True, value=22)
        fetch = css(widgets.Button(description="Fetch host key", icon="key"), "heroes-admin-fetch-key")
        fetch.on_click(lambda _b: self.fetch_key())
        self.key_info = css(widgets.HTML(""), "heroes-admin-host-key")
        self.fingerprint = css(widgets.Text(description="Fingerprint the site publishes",
                                            style={"description_width": "200px"},
                                            layout=widgets.Layout(width="620px"),
                                            placeholder="SHA256:... (from ssh-keygen -lf on the node, or the "
                                                        "site's documentation)"), "heroes-admin-fingerprint")
        confirm = css(widgets.Button(description="Confirm fingerprint", button_style="warning"),
                      "heroes-admin-confirm-key")
        confirm.on_click(lambda _b: self.confirm_key(self.fingerprint.value))
        self.verdict = css(widgets.HTML(""), "heroes-admin-key-verdict")
        self.confirm_box = widgets.VBox([self.key_info, widgets.HBox([self.fingerprint, confirm]), self.verdict],
                                        layout=widgets.Layout(display="none"))
        self.enroll_form = ClusterForm(editing=False)
        enroll = css(widgets.Button(description="Enroll cluster", button_style="primary"), "heroes-admin-enroll")
        enroll.on_click(lambda _b: self.enroll())
        self.settings_box = css(widgets.VBox([widgets.HTML("<b>Step 3: the cluster's settings</b>"),
                                              self.enroll_form.widget, enroll],
                                             layout=widgets.Layout(display="none")), "heroes-admin-enroll-settings")
        for field in (self.host.input, self.port.input):
            field.observe(lambda _change: self._forget_key(), names="value")
        return css(widgets.VBox([
            widgets.HTML("<h4>Enroll a cluster</h4><b>Step 1: where its login node answers SSH</b>"),
            widgets.HBox([self.host.widget]), widgets.HBox([self.port.widget, fetch]),
            widgets.HTML("<b>Step 2: confirm the host key</b> (compare it with what the site publishes)"),
            self.confirm_box, self.settings_box]), "heroes-admin-enroll-box")

    def _forget_key(self) -> None:
        """A changed host or port invalidates a confirmed key: the admin confirms the new node's again."""
        self.scanned = None
        self._hide(self.confirm_box)
        self._hide(self.settings_box)

    def fetch_key(self) -> None:
        self._forget_key()
        if not (self.host.validate() & self.port.validate()):
            return
        body = {"host": self.host.value, "port": self.port.value}
        self.report(f"reading the host key of {body['host']}:{body['port']}...")
        key = api_call(self.report, lambda: self.client.call("POST", f"{CLUSTERS}host-key", json=body))
        if not key:
            return
        self.scanned = key
        self.key_info.value = (f"<p>{html.escape(key['host'])}:{key['port']} presents a "
                               f"<b>{html.escape(key['key_type'])}"
                               f"</b> key with fingerprint<br><code class='heroes-admin-presented'>"
                               f"{html.escape(key['fingerprint'])}</code></p>")
        self.fingerprint.value = ""
        self.verdict.value = ""
        self.confirm_box.layout.display = None
        self.report("compare the fingerprint with the one the site publishes, then type or paste that one")

    def confirm_key(self, typed: str) -> bool:
        """Only the fingerprint the site publishes, typed by the admin and equal to the presented one, opens
        the settings; anything else is refused and said so."""
        if not self.scanned:
            return False
        presented, confirmed = self.scanned["fingerprint"], normalised_fingerprint(typed)
        if not typed.strip():
            self.verdict.value = "<span style='color:#b00'>type the fingerprint the site publishes first</span>"
            return False
        if confirmed != normalised_fingerprint(presented):
            self._hide(self.settings_box)
            text = (f"Refused: {self.scanned['host']}:{self.scanned['port']} presents {presented}, not the "
                    f"{confirmed} you confirmed. Do not enroll it: ask the site which key is right (someone may "
                    "be between the gateway and the node).")
            self.verdict.value = f"<span style='color:#b00'>{html.escape(text)}</span>"
            self.report(text, True)
            return False
        self.verdict.value = "<span style='color:#060'>&#10004; the fingerprint matches: the key will be pinned</span>"
        self.settings_box.layout.display = None
        self.report("fingerprint confirmed: fill in the cluster's settings and enroll it")
        return True

    def enroll(self) -> str | None:
        """POST the enrollment (the service connects, compares the key again, probes Slurm), then test it."""
        body = self.enroll_form.body()
        if not self.scanned or body is None:
            self.report("fix the fields marked in red" if self.scanned else "fetch and confirm the host key first",
                        True)
            return None
        body.update(host=self.scanned["host"], port=self.scanned["port"],
                    host_key_fingerprint=normalised_fingerprint(self.fingerprint.value))
        self.report(f"enrolling {body['name']}: connecting, probing Slurm...")
        cluster = api_call(self.report, lambda: self.client.call("POST", CLUSTERS, json=body))
        if not cluster:
            return None
        offered = ", ".join(p["name"] for p in cluster["partitions"]) or "none"
        self.report(f"cluster {cluster['name']} enrolled (host key {cluster['host_key_fingerprint']} pinned, "
                    f"Slurm {cluster['slurm_version']}, partitions {offered})")
        self._forget_key()
        self.enroll_form.name.input.value = ""
        self.refresh(select=cluster["id"], answer=cluster)
        self.test(cluster["id"], quiet=True)
        return cluster["id"]

    # --- an enrolled cluster ---------------------------------------------------------------------------
    def refresh(self, select: str | None = None, answer: dict | None = None, gone: str | None = None) -> None:
        """The list from the API, with this app's own last change in it (``answer``, ``gone``: see merged)."""
        listed = api_call(self.report, lambda: self.client.call("GET", CLUSTERS)) or []
        self.clusters = sorted(merged(listed, answer, gone), key=lambda c: c["name"])
        self.table.update(cluster_rows(self.clusters), keep="id")
        current = select or self.pick.value
        self.pick.options = [(c["name"], c["id"]) for c in self.clusters]
        ids = [c["id"] for c in self.clusters]
        self.pick.value = current if current in ids else (ids[0] if ids else None)

    def _cluster(self, cluster_id: str | None) -> dict | None:
        found = next((c for c in self.clusters if c["id"] == cluster_id), None)
        if found is None:
            self.report("pick a cluster first", True)
        return found

    def test(self, cluster_id: str | None, quiet: bool = False) -> dict | None:
        cluster = self._cluster(cluster_id)
        if cluster is None:
            return None
        self.checks.value = f"<i>testing {html.escape(cluster['name'])}...</i>"
        report = api_call(self.report, lambda: self.client.call("POST", f"{CLUSTERS}{cluster_id}/readiness"))
        self.checks.value = checks_html(report) if report else ""
        if report and not quiet:
            failed = [c["name"] for c in report["checks"] if c["ok"] is False]
            self.report(f"{cluster['name']}: " + (f"not working: {', '.join(failed)}" if failed else
                                                  "every check passed"), bool(failed))
        return report or None

    def start_edit(self, cluster_id: str | None) -> None:
        cluster = self._cluster(cluster_id)
        if cluster is None:
            return
        self.editing = cluster
        self.edit_title.value = (f"<b>Edit {html.escape(cluster['name'])}</b> <small>({html.escape(cluster['host'])}:"
                                 f"{cluster['port']}; a new login node is a new enrollment)</small>")
        self.edit_form.set(cluster)
        self.edit_box.layout.display = None
        self.read_partitions()

    def read_partitions(self) -> None:
        """The partitions sinfo lists now, the offered ones selected (kept as stored when the read fails)."""
        cluster = self.editing
        if cluster is None:
            return
        offered = [p["name"] for p in cluster.get("partitions") or []]
        try:
            found = self.client.call("GET", f"{CLUSTERS}{cluster['id']}/partitions")
        except ServiceCallError as exc:  # shown next to the list, which keeps the stored partitions
            self.edit_form.show_partitions(offered, offered, f"cannot read them now: {exc.detail}", error=True)
            return
        names = [p["name"] for p in found]
        self.edit_form.show_partitions(names, offered, f"read from the cluster: {', '.join(names) or 'none'}")

    def save_edit(self) -> None:
        cluster = self.editing
        body = self.edit_form.body()
        if cluster is None or body is None:
            self.report("fix the fields marked in red", True)
            return
        chosen = list(self.edit_form.partitions.value)
        if chosen != [p["name"] for p in cluster.get("partitions") or []]:
            if not chosen:
                self.report("offer at least one partition", True)
                return
            body["partitions"] = chosen
        saved = api_call(self.report, lambda: self.client.call("PATCH", f"{CLUSTERS}{cluster['id']}", json=body),
                         f"cluster {cluster['name']} saved")
        if saved:
            self._hide(self.edit_box)
            self.refresh(select=cluster["id"], answer=saved)

    # --- removal ---------------------------------------------------------------------------------------
    def _confirm_box(self) -> widgets.Widget:
        self.remove_question = widgets.HTML("")
        yes = css(widgets.Button(description="Yes, remove it", button_style="danger"), "heroes-admin-remove-yes")
        keep = widgets.Button(description="Keep it")
        yes.on_click(lambda _b: self.remove(self.pick.value))
        keep.on_click(lambda _b: self._hide(self.confirm_remove))
        return css(widgets.HBox([self.remove_question, yes, keep], layout=widgets.Layout(display="none")),
                   "heroes-admin-remove-confirm")

    def ask_remove(self, cluster_id: str | None) -> None:
        cluster = self._cluster(cluster_id)
        if cluster is not None:
            self.remove_question.value = f"Remove <b>{html.escape(cluster['name'])}</b> from the organization?"
            self.confirm_remove.layout.display = None

    def remove(self, cluster_id: str | None) -> bool:
        """DELETE the cluster; the service refuses (409) while work still runs on it, and says which."""
        cluster = self._cluster(cluster_id)
        self._hide(self.confirm_remove)
        if cluster is None:
            return False
        done = api_call(lambda text, error=False: self.report(f"{cluster['name']} was not removed: {text}", error),
                        lambda: self.client.call("DELETE", f"{CLUSTERS}{cluster_id}"))
        if done:
            self.report(f"cluster {cluster['name']} removed")
            self.checks.value = ""
            self.refresh(gone=cluster_id)
        return bool(done)

    @staticmethod
    def _hide(box: widgets.Widget) -> None:
        box.layout.display = "none"
