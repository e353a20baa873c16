"""The settings of one cluster as the Admin app edits them: the same form enrolls a cluster (with its name)
and edits an enrolled one (with the partitions to offer, read from the cluster). The login node's host,
port and host key are not here: they are confirmed once, at enrollment (admin_clusters.py), and a new login
node is a new enrollment.
"""
from __future__ import annotations

import ipywidgets as widgets

from .admin_forms import STYLE, WIDE, EnergyProfileForm, NumberField, PriceModelForm, TextField
from .ui import css, message

#: the service's rules (api/clusters.py), said in words next to the field
NAME_PATTERN = r"[a-z][a-z0-9-]{0,30}[a-z0-9]"
NAME_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'"
WORK_DIR_PATTERN = r"[A-Za-z0-9_./@+{}][A-Za-z0-9_./@+{}-]{0,399}"
WORK_DIR_RULE = "a path (absolute, or relative to the home directory); {login} stands for the user's login"
LOGIN_PATTERN = r"[a-z_][a-z0-9_-]{0,31}"
IDENTITY_MODES = [("per-user: each user's own login (gateway certificates)", "per-user"),
                  ("service account: everyone runs as one login", "service-account")]


class ClusterForm:
    """Name (enrollment only), description, work directory, container runtime, identity mode (and service
    account), relative speed, partitions (editing only), price model and energy profile."""

    def __init__(self, editing: bool):
        self.editing = editing
        self.name = TextField("Cluster name", "name", pattern=NAME_PATTERN, rule=NAME_RULE)
        self.description = TextField("Description", "description", optional=True)
        self.work_dir = TextField("Work directory", "work_dir", pattern=WORK_DIR_PATTERN, rule=WORK_DIR_RULE,
                                  value="heroes-work/{login}")
        self.runtime = css(widgets.Dropdown(options=["apptainer", "charliecloud", "none"], value="charliecloud",
                                            description="Container runtime", style=STYLE, layout=WIDE),
                           "heroes-admin-field-container_runtime")
        self.identity_mode = css(widgets.Dropdown(options=IDENTITY_MODES, description="Identity mode", style=STYLE,
                                                  layout=widgets.Layout(width="520px")),
                                 "heroes-admin-field-identity_mode")
        self.service_login = TextField("Service login", "service_login", pattern=LOGIN_PATTERN, value="heroes",
                                       rule="a Unix login: lowercase letters, digits, '_' and '-'")
        self.service_key = css(widgets.Textarea(description="Service private key", style=STYLE,
                                                placeholder="unencrypted OpenSSH/PEM key; write-only, never shown "
                                                            "again (leave empty to keep the stored one)",
                                                layout=widgets.Layout(width="520px", height="90px")),
                               "heroes-admin-field-service_private_key")
        self.service_box = widgets.VBox([self.service_login.widget, self.service_key])
        self.speed = NumberField("Relative speed", "relative_speed", above=0, maximum=1000, value=1,
                                 hint="1.0 = the reference cluster")
        self.partitions = css(widgets.SelectMultiple(options=[], description="Offer partitions", style=STYLE,
                                                     rows=4, layout=WIDE), "heroes-admin-field-partitions")
        self.partitions_note = css(widgets.HTML(""), "heroes-admin-partitions-note")
        self.price = PriceModelForm()
        self.energy = EnergyProfileForm()
        self.identity_mode.observe(lambda _change: self._show_mode(), names="value")
        top = ([] if editing else [self.name.widget]) + [self.description.widget, self.work_dir.widget, self.runtime,
                                                         self.identity_mode, self.service_box, self.speed.widget]
        partitions = [self.partitions, self.partitions_note] if editing else [
            widgets.HTML("<small>Partitions: read from the cluster at enrollment (every partition sinfo lists; "
                         "offer fewer with Edit).</small>")]
        self.widget = widgets.VBox(top + partitions + [widgets.HBox([self.price.widget, self.energy.widget])])
        self._show_mode()

    def _show_mode(self) -> None:
        self.service_box.layout.display = None if self.identity_mode.value == "service-account" else "none"

    def body(self) -> dict | None:
        """The request body for the API, or None after marking every field that is wrong."""
        fields = [self.description, self.work_dir, self.speed] + ([] if self.editing else [self.name])
        if self.identity_mode.value == "service-account":
            fields.append(self.service_login)
        valid = all([f.validate() for f in fields])
        price, energy = self.price.value(), self.energy.value()
        if not valid or price is None or energy is None:
            return None
        body = {"description": self.description.value or "", "work_dir": self.work_dir.value,
                "container_runtime": self.runtime.value, "identity_mode": self.identity_mode.value,
                "relative_speed": self.speed.value, "price_model": price, "energy_profile": energy}
        if not self.editing:
            body["name"] = self.name.value
        if self.identity_mode.value == "service-account":
            body["service_login"] = self.service_login.value
        if self.service_key.value.strip():
            body["service_private_key"] = self.service_key.value.strip() + "\n"
        return body

    def set(self, cluster: dict) -> None:
        """Fill the form with an enrolled cluster's record (never its key: the API does not return it)."""
        self.description.input.value = cluster.get("description") or ""
        self.work_dir.input.value = cluster.get("work_dir") or ""
        self.runtime.value = cluster.get("container_runtime") or "none"
        self.identity_mode.value = cluster.get("identity_mode") or "per-user"
        self.service_login.input.value = cluster.get("service_login") or "heroes"
        self.service_key.value = ""
        self.speed.set(cluster.get("relative_speed", 1))
        self.price.set(cluster.get("price_model") or {})
        self.energy.set(cluster.get("energy_profile") or {})
        offered = [p["name"] for p in cluster.get("partitions") or []]
        self.show_partitions(offered, offered, "")

    def show_partitions(self, available: list[str], offered: list[str], note: str, error: bool = False) -> None:
        """The partitions to choose from (``available``) with the ``offered`` ones selected."""
        self.partitions.options = available
        self.partitions.value = tuple(p for p in offered if p in available)
        self.partitions_note.value = message(note, error) if note else ""
