"""Form pieces of the Admin app's Clusters tab: number fields that refuse what they cannot hold, the price
model form and the energy profile form.

Why text boxes for numbers: a browser's number input silently drops what it cannot parse (``12.7`` typed in
an integer box became ``127``, ``1e30`` became ``130``). A text box keeps exactly what was typed; the field
parses it here and says, under the box, why it refuses it. The service checks the same bounds again (its
pydantic models in api/clusters.py) and its 422 is shown as is.
"""
from __future__ import annotations

import html
import math
import re

import ipywidgets as widgets

from .ui import css, message

STYLE = {"description_width": "200px"}
WIDE = widgets.Layout(width="380px")
#: the service's bounds (api/clusters.py PriceModel / EnergyProfile)
RATE_MAX = 1e6


def _shown(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class NumberField:
    """A number typed as text, parsed and bounded here; ``value`` is None until it is valid. The box and its
    message share the CSS class ``heroes-admin-field-<name>``."""

    def __init__(self, label: str, name: str, *, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None, integer: bool = False, optional: bool = False, value=None,
                 hint: str = ""):
        self.name, self.minimum, self.maximum, self.above = name, minimum, maximum, above
        self.integer, self.optional = integer, optional
        self.input = css(widgets.Text(value=_shown(value), description=label, style=STYLE, layout=WIDE,
                                      placeholder=hint), "heroes-admin-number")
        self.message = css(widgets.HTML(""), "heroes-admin-field-message")
        self.widget = css(widgets.HBox([self.input, self.message]), f"heroes-admin-field-{name}")
        self.input.observe(lambda _change: self.validate(), names="value")

    def parse(self) -> tuple[float | int | None, str]:
        """(value, "") or (None, what is wrong) for the text in the box."""
        text = self.input.value.strip()
        if not text:
            return (None, "") if self.optional else (None, "required")
        if self.integer and not re.fullmatch(r"[+-]?\d{1,12}", text):
            return None, f"{text!r} is not a whole number"
        try:
            number = int(text) if self.integer else float(text)
        except ValueError:
            hint = " (use a dot for decimals)" if "," in text else ""
            return None, f"{text!r} is not a number{hint}"
        if not math.isfinite(number):
            return None, "must be a finite number"
        if self.above is not None and number <= self.above:
            return None, f"must be above {self.above:g}"
        if self.minimum is not None and number < self.minimum:
            return None, f"must be at least {self.minimum:g}"
        if self.maximum is not None and number > self.maximum:
            return None, f"must be at most {self.maximum:g}"
        return number, ""

    def validate(self) -> bool:
        _value, problem = self.parse()
        self.message.value = message(problem, True) if problem else ""
        return not problem

    @property
    def value(self):
        return self.parse()[0]

    def set(self, value) -> None:
        self.input.value = _shown(value)


class TextField:
    """A text typed in a box, checked against a pattern with the rule said in words."""

    def __init__(self, label: str, name: str, *, pattern: str | None = None, rule: str = "", value: str = "",
                 optional: bool = False, placeholder: str = ""):
        self.name, self.pattern, self.rule, self.optional = name, pattern, rule, optional
        self.input = widgets.Text(value=value or "", description=label, style=STYLE, layout=WIDE,
                                  placeholder=placeholder)
        self.message = css(widgets.HTML(""), "heroes-admin-field-message")
        self.widget = css(widgets.HBox([self.input, self.message]), f"heroes-admin-field-{name}")
        self.input.observe(lambda _change: self.validate(), names="value")

    def problem(self) -> str:
        text = self.input.value.strip()
        if not text:
            return "" if self.optional else "required"
        if self.pattern and not re.fullmatch(self.pattern, text):
            return self.rule or "not allowed here"
        return ""

    def validate(self) -> bool:
        problem = self.problem()
        self.message.value = message(problem, True) if problem else ""
        return not problem

    @property
    def value(self) -> str | None:
        return self.input.value.strip() or None


def _all_valid(fields) -> bool:
    return all([f.validate() for f in fields])  # a list, so every field shows its message


class PriceModelForm:
    """What a job costs on the cluster: per-hour rates and energy (on-premises) or a cloud catalog's price."""

    RATES = (("per_core_hour", "per core-hour"), ("per_node_hour", "per node-hour"), ("per_gpu_hour", "per GPU-hour"),
             ("per_gb_memory_hour", "per GB of memory-hour"), ("per_kwh", "per kWh of energy"))

    def __init__(self):
        self.kind = css(widgets.Dropdown(options=["on-premises", "cloud"], description="Price model", style=STYLE,
                                         layout=WIDE), "heroes-admin-price-kind")
        self.currency = TextField("Currency", "currency", pattern=r"[A-Z]{3}", rule="three capital letters, e.g. EUR",
                                  value="EUR")
        self.rates = {key: NumberField(label, key, minimum=0, maximum=RATE_MAX, value=0) for key, label in self.RATES}
        self.instance_type = TextField("Instance type", "instance_type", pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
                                       rule="an instance type as the catalog names it")
        self.catalog = TextField("Catalog", "catalog", pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value="default",
                                 rule="a catalog name ('default': the shipped one)")
        self.region = TextField("Region", "region", pattern=r"[A-Za-z0-9][A-Za-z0-9-]{0,63}", optional=True,
                                rule="a region name of the catalog", placeholder="the catalog's default")
        self.on_premises = widgets.VBox([self.currency.widget] + [f.widget for f in self.rates.values()])
        self.cloud = widgets.VBox([self.instance_type.widget, self.catalog.widget, self.region.widget])
        self.kind.observe(lambda _change: self._show_kind(), names="value")
        self.widget = css(widgets.VBox([widgets.HTML("<b>Price model</b>"), self.kind, self.on_premises, self.cloud]),
                          "heroes-admin-price")
        self._show_kind()

    def _show_kind(self) -> None:
        cloud = self.kind.value == "cloud"
        self.cloud.layout.display = None if cloud else "none"
        self.on_premises.layout.display = "none" if cloud else None

    def value(self) -> dict | None:
        """The price model for the API, or None after marking what is wrong."""
        if self.kind.value == "cloud":
            fields = [self.instance_type, self.catalog, self.region]
            if not _all_valid(fields):
                return None
            return {"kind": "cloud", "instance_type": self.instance_type.value, "catalog": self.catalog.value,
                    **({"region": self.region.value} if self.region.value else {})}
        if not _all_valid([self.currency, *self.rates.values()]):
            return None
        return {"kind": "on-premises", "currency": self.currency.value,
                **{key: field.value for key, field in self.rates.items()}}

    def set(self, model: dict) -> None:
        self.kind.value = model.get("kind") or "on-premises"
        self.currency.input.value = model.get("currency") or "EUR"
        for key, field in self.rates.items():
            field.set(model.get(key, 0))
        self.instance_type.input.value = model.get("instance_type") or ""
        self.catalog.input.value = model.get("catalog") or "default"
        self.region.input.value = model.get("region") or ""


class EnergyProfileForm:
    """The power figures the decision module predicts a job's energy with."""

    def __init__(self):
        self.fields = {
            "idle_watts_per_node": NumberField("Idle W per node", "idle_watts_per_node", minimum=0, maximum=RATE_MAX,
                                               value=0),
            "watts_per_core": NumberField("W per busy core", "watts_per_core", minimum=0, maximum=RATE_MAX, value=0),
            "watts_per_gpu": NumberField("W per busy GPU", "watts_per_gpu", minimum=0, maximum=RATE_MAX, value=0),
            "pue": NumberField("PUE", "pue", minimum=1, maximum=10, value=1, hint="1.0 - 10"),
            "carbon_g_per_kwh": NumberField("Carbon g CO2 per kWh", "carbon_g_per_kwh", minimum=0, maximum=1e4,
                                            value=0),
            "nominal_cpu_freq_khz": NumberField("Nominal CPU kHz", "nominal_cpu_freq_khz", minimum=400_000,
                                                maximum=6_000_000, integer=True, optional=True,
                                                hint="e.g. 2400000 (optional)"),
        }
        self.freqs = css(widgets.Text(description="CPU frequencies kHz", style=STYLE, layout=WIDE,
                                      placeholder="e.g. 1800000, 2400000 (optional)"),
                         "heroes-admin-field-cpu_freqs_khz")
        self.freqs_message = css(widgets.HTML(""), "heroes-admin-field-message")
        self.freqs.observe(lambda _change: self._freqs(), names="value")
        self.widget = css(widgets.VBox([widgets.HTML("<b>Energy profile</b>")]
                                       + [f.widget for f in self.fields.values()]
                                       + [widgets.HBox([self.freqs, self.freqs_message])]), "heroes-admin-energy")

    def _freqs(self) -> tuple[list[int] | None, bool]:
        """(frequencies or None when empty, whether the text is valid); the message says what is wrong."""
        parts = [p.strip() for p in self.freqs.value.replace(";", ",").split(",") if p.strip()]
        bad = [p for p in parts if not re.fullmatch(r"\d{6,7}", p) or not 400_000 <= int(p) <= 6_000_000]
        problem = f"not a frequency between 400000 and 6000000 kHz: {', '.join(bad)}" if bad else \
            "at most 64 frequencies" if len(parts) > 64 else ""
        self.freqs_message.value = message(problem, True) if problem else ""
        return ([int(p) for p in parts] or None), not problem

    def value(self) -> dict | None:
        freqs, freqs_ok = self._freqs()
        if not _all_valid(self.fields.values()) or not freqs_ok:
            return None
        out = {key: field.value for key, field in self.fields.items() if field.value is not None}
        if freqs:
            out["cpu_freqs_khz"] = freqs
        return out

    def set(self, profile: dict) -> None:
        for key, field in self.fields.items():
            field.set(profile.get(key, None if field.optional else 0))
        self.freqs.value = ", ".join(str(f) for f in profile.get("cpu_freqs_khz") or [])


def checks_html(report: dict) -> str:
    """A "test connection" report in words: one line per check, what works and what does not."""
    marks = {True: ("&#10004;", "#060", "works"), False: ("&#10008;", "#b00", "fails"),
             None: ("&#8211;", "#777", "skipped")}
    lines = []
    for check in report.get("checks") or []:
        mark, colour, word = marks[check.get("ok")]
        lines.append(f"<div class='heroes-admin-check heroes-admin-check-{html.escape(check['name'])}'>"
                     f"<span style='color:{colour}'>{mark} {word}</span> <b>{html.escape(check['name'])}</b>: "
                     f"{html.escape(check.get('detail') or '')}</div>")
    verdict = ("<span style='color:#060'>everything a workflow needs works</span>" if report.get("ok")
               else "<span style='color:#b00'>something a workflow needs does not work (see the lines marked "
                    "&#10008;)</span>")
    who = html.escape(report.get("login") or "nobody")
    return (f"<p>Test connection of <b>{html.escape(report.get('cluster', ''))}</b> as <b>{who}</b> "
            f"({html.escape(report.get('identity_mode', ''))}): {verdict}</p>{''.join(lines)}")


def api_call(report, fn, done: str | None = None):
    """``fn()``'s answer (``True`` for an empty success), or None after ``report`` showed the service's own
    error (409 in use, 422 with the broken rule, 503 unreachable...). Every Admin tab acts through it."""
    from .api_client import ServiceCallError

    try:
        result = fn()
    except ServiceCallError as exc:
        report(exc.detail, True)
        return None
    if done:
        report(done)
    return True if result is None else result


def merged(rows: list[dict], answer: dict | None = None, gone: str | None = None) -> list[dict]:
    """A list read from the API, corrected by what this app just did: ``answer`` (a created or changed
    record) in it, the record with id ``gone`` out. Why: the service commits a change as its answer leaves,
    so a list read right after may not show it yet; the app shows the change it was told about at once."""
    out = [r for r in rows if r["id"] != gone and (answer is None or r["id"] != answer["id"])]
    return out + [answer] if answer is not None else out
