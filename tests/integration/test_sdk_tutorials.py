"""The three tutorials (notebooks/tutorials/) run top to bottom as bob would run them in his JupyterLab: a kernel
of the single-user servers' own environment (their venv + the pylib folder the hub publishes), bob's hub token and
the service URL in its environment, the demo data in place. Their outputs are checked, not only the absence of
errors: a COMPLETED instance, DataFrames, plotly figures, the energy table."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sdk_support import demo, server_env  # noqa: F401

#: a tutorial runs two to four workflows, each waiting for a Slurm queue on a shared two-core machine
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

TUTORIALS = Path(__file__).resolve().parents[2] / "notebooks" / "tutorials"
PLOTLY = "application/vnd.plotly.v1+json"


@pytest.fixture(scope="module")
def user_kernel(demo, stack_components, tmp_path_factory, monkeypatch_module):
    """A kernelspec that starts ipykernel from the single-user venv with the hub's pylib on its path, and bob's
    server environment (his hub token, HEROES_API_URL) for the kernels it starts."""
    hub = stack_components["jupyterhub"]
    python = hub.singleuser_env / "bin" / "python"
    assert python.exists(), f"no single-user environment at {hub.singleuser_env}; start it: heroes dev up jupyterhub"
    assert (hub.user_pythonpath / "heroes_sdk" / "__init__.py").exists(), \
        f"heroes_sdk is not published in {hub.user_pythonpath}: restart the hub (heroes dev down/up jupyterhub)"
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "heroes-user"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "HEROES single-user", "language": "python",
        "env": {"PYTHONPATH": str(hub.user_pythonpath)}}))
    monkeypatch_module.setenv("JUPYTER_PATH", str(root))
    for name, value in server_env(demo["stack"], "bob").items():
        monkeypatch_module.setenv(name, value)
    monkeypatch_module.setenv("HEROES_CONFIG_DIR", str(root / "no-login-file"))  # only the server's token counts
    return "heroes-user"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def execute(name: str, kernel: str, workdir: Path) -> nbformat.NotebookNode:
    shutil.copy(TUTORIALS / name, workdir / name)
    notebook = nbformat.read(workdir / name, as_version=4)
    NotebookClient(notebook, kernel_name=kernel, timeout=900, resources={"metadata": {"path": str(workdir)}}).execute()
    nbformat.write(notebook, workdir / name)  # executed copy, for a look when an assertion fails
    return notebook


def tagged(notebook, tag: str) -> list[dict]:
    [cell] = [c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", [])]
    return cell["outputs"]


def data_of(outputs: list[dict], mime: str) -> list:
    return [o["data"][mime] for o in outputs if o.get("output_type") in ("execute_result", "display_data")
            and mime in o.get("data", {})]


def text_of(outputs: list[dict]) -> str:
    parts = [o.get("text", "") for o in outputs if o.get("output_type") == "stream"]
    parts += [o["data"].get("text/plain", "") + o["data"].get("text/html", "") for o in outputs if "data" in o]
    return "\n".join(parts)


def values(array) -> list:
    """A plotly JSON array as a list (plotly 6+ writes numeric arrays as base64 typed arrays)."""
    if isinstance(array, dict) and "bdata" in array:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).tolist()
    return list(array)


def assert_no_errors(notebook) -> None:
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []


def test_tutorial_1_submit_and_read_results(user_kernel, tmp_path):
    nb = execute("01-submit-and-read-results.ipynb", user_kernel, tmp_path)
    assert_no_errors(nb)
    assert "'bob'" in text_of(nb.cells[2]["outputs"])  # heroes.me(), from the server's token alone
    waited = tagged(nb, "completed-instance")
    assert data_of(waited, "application/vnd.jupyter.widget-view+json"), "wait() showed no progress widget"
    [view] = data_of(waited, "text/html")  # wait() answers the instance, shown as a table
    assert "COMPLETED" in view and "simulate" in view
    [table] = data_of(tagged(nb, "dataframe"), "text/html")
    assert "<table" in table and "exact" in table
    [figure] = data_of(tagged(nb, "figure"), PLOTLY)
    assert [t["name"] for t in figure["data"]] == ["u", "exact"] and len(values(figure["data"][0]["x"])) == 120
    [energy] = data_of(tagged(nb, "energy-figure"), PLOTLY)
    bars = [t for t in energy["data"] if t["type"] == "bar"]
    assert bars and values(bars[0]["x"]) == ["simulate"] and values(bars[0]["y"])[0] > 0, energy["layout"].get("title")


def test_tutorial_2_compare_clusters_and_right_size(user_kernel, tmp_path):
    nb = execute("02-compare-clusters-cost-energy.ipynb", user_kernel, tmp_path)
    assert_no_errors(nb)
    [table] = data_of(tagged(nb, "dataframe"), "text/html")
    assert "alpha" in table and "beta" in table and "energy_kwh" in table
    [figure] = data_of(tagged(nb, "figure"), PLOTLY)
    assert {t["name"] for t in figure["data"]} == {"performance", "energy", "cost"}
    [instance] = data_of(tagged(nb, "completed-instance"), "text/html")
    assert "COMPLETED" in instance and instance.count("COMPLETED") >= 4  # the instance and its three steps
    [energy] = data_of(tagged(nb, "energy-table"), "text/html")
    assert all(f".{step}</td>" in energy for step in ("pre", "solve", "post")), energy  # a row per measured step
    assert "measured" in text_of(tagged(nb, "energy-table")) and "predicted" in text_of(tagged(nb, "energy-table"))


def test_tutorial_3_data_and_training(user_kernel, tmp_path):
    nb = execute("03-data-and-training.ipynb", user_kernel, tmp_path)
    assert_no_errors(nb)
    [listing] = data_of(tagged(nb, "dataframe"), "text/html")
    assert "tutorial/my_measurements.csv" in listing
    [instance] = data_of(tagged(nb, "completed-instance"), "text/html")
    assert "COMPLETED" in instance and "sklearn-train" in instance
    [metrics] = data_of(tagged(nb, "metrics"), "text/plain")
    assert "r2" in metrics and "random-forest" in metrics
    assert (tmp_path / "model.pkl").stat().st_size > 1000
    [figure] = data_of(tagged(nb, "figure"), PLOTLY)
    assert "R²" in figure["layout"]["title"]["text"]
