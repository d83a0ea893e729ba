"""The Dagster web UI as a person uses it: `dagster dev` on a loopback port, driven by Debian's headless Chromium.

The test opens the lineage view and reads the twelve stage groups off the graph canvas, opens `raw/dialog`,
presses Materialize, waits until the UI shows the new materialization, then materializes the whole pipeline and
checks that the plots on the asset pages (loss curves, drop counts, the evaluation report's plots) load as
images with a non-zero natural width. Screenshots go to runs/ui-screenshots/ (kept after the test so a person can
look at them; the README's lineage picture is one of them).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from plasma_pipeline.defs.common import GROUP_NAMES
from plasma_pipeline.recipe import REPO_ROOT
from plasma_pipeline_tests.conftest import project_instance

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO_ROOT / "runs" / "ui-screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory, offline_sources):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make browser-deps` installs Debian's chromium")
    tmp = tmp_path_factory.mktemp("ui")
    project = project_instance(tmp)
    home, env = project["home"], project["env"]
    port = _free_port()
    log = open(tmp / "dagster_dev.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-m", "plasma_pipeline.definitions",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(url + "/server_info", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("dagster dev did not come up:\n" + (tmp / "dagster_dev.log").read_text()[-4000:])
            time.sleep(1)
    try:
        yield {"url": url, "home": home, "store": tmp / "store", "log": tmp / "dagster_dev.log",
               "recipe": project["recipe"]}
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: dagster dev stops its daemon and webserver
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def page(dagster_dev):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
        )
        # scale 2: the lineage graph's labels stay legible in the screenshot at the zoom that fits all twelve stages
        pg = browser.new_page(viewport={"width": 1600, "height": 1000}, device_scale_factor=2)
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def _dismiss_welcome(page) -> None:
    """A first visit gets a "Join the Dagster community" modal a moment after load; Skip is remembered."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.first.wait_for(timeout=15_000)
    except Exception:  # playwright's TimeoutError: the modal was already dismissed in this browser
        return
    skip.first.click()
    skip.first.wait_for(state="detached")


def test_lineage_graph_shows_the_twelve_stages(dagster_dev, page):
    page.goto(dagster_dev["url"] + "/asset-groups")
    _dismiss_welcome(page)
    canvas = page.locator("svg").filter(has_text="evaluation").first
    canvas.wait_for()
    missing = [g for g in GROUP_NAMES if not canvas.get_by_text(g, exact=True).count()]
    assert not missing, f"stage groups missing from the lineage graph: {missing}\n{canvas.text_content()}"
    assert len(GROUP_NAMES) == 12
    # The sidebar lists the groups by name: numbered, that is pipeline order.
    listed = [t.strip() for t in page.get_by_text(re.compile(r"^\d\d_\w+$")).all_inner_texts()]
    assert list(dict.fromkeys(g for g in listed if g in GROUP_NAMES)) == list(GROUP_NAMES), listed
    # For the picture: without the navigation rail the graph fits wider, and a crop of the twelve stages.
    page.get_by_text("Hide navigation").click()
    page.reload()
    canvas = page.locator("svg").filter(has_text="12_evaluation").first
    canvas.wait_for()
    page.wait_for_timeout(1500)  # the graph animates to its fitted zoom
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "lineage.png"))
    boxes = [canvas.get_by_text(g, exact=True).first.bounding_box() for g in GROUP_NAMES]
    x0, y0 = min(b["x"] for b in boxes) - 20, min(b["y"] for b in boxes) - 30
    x1, y1 = max(b["x"] + b["width"] for b in boxes) + 90, max(b["y"] + b["height"] for b in boxes) + 30
    page.screenshot(path=str(SCREENSHOTS / "lineage-graph.png"), clip={"x": x0, "y": y0, "width": x1 - x0,
                                                                        "height": y1 - y0})


def test_materialize_from_the_ui_succeeds(dagster_dev, page):
    page.goto(dagster_dev["url"] + "/assets/raw/dialog")
    page.get_by_text("Never materialized").wait_for()
    page.locator("button", has_text=re.compile(r"^\s*Materialize\s*$")).first.click()

    # The UI polls the run; the asset page flips from "Never materialized" once the run has succeeded.
    deadline = time.time() + 300
    instance = dg.DagsterInstance.from_config(str(dagster_dev["home"]))
    target = {dg.AssetKey(["raw", "dialog"])}
    while time.time() < deadline:
        # Only the run the button launched: eager automation may start downstream runs after it.
        runs = [r for r in instance.get_runs() if r.asset_selection == target]
        if runs and runs[0].status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            pytest.fail(f"run {runs[0].run_id} ended {runs[0].status}:\n" + dagster_dev["log"].read_text()[-4000:])
        if runs and runs[0].status == dg.DagsterRunStatus.SUCCESS:
            break
        time.sleep(2)
    else:
        pytest.fail("the run launched from the UI did not finish in 300 s:\n" + dagster_dev["log"].read_text()[-4000:])

    page.reload()
    page.get_by_text("Never materialized").wait_for(state="detached")
    page.get_by_text("Latest materialization").wait_for()
    page.get_by_text("rows").first.wait_for()  # the stage's counters show in the materialization's metadata
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "raw-dialog-materialized.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    assert len(runs) == 1, [r.run_id for r in runs]
    ev = instance.get_latest_materialization_event(dg.AssetKey(["raw", "dialog"]))
    current = (dagster_dev["store"] / "raw" / "dialog" / "CURRENT").read_text().strip()
    assert ev.asset_materialization.tags["dagster/data_version"] == current


def test_the_automation_sensor_carries_the_change_to_the_next_stage(dagster_dev, page):
    """With `dagster dev` running, the data stages follow their parents: materializing raw/dialog from the UI
    (previous test) makes the running sensor start clean/dialog, which the asset page then shows."""
    instance = dg.DagsterInstance.from_config(str(dagster_dev["home"]))
    key = dg.AssetKey(["clean", "dialog"])
    deadline = time.time() + 240
    while time.time() < deadline and instance.get_latest_materialization_event(key) is None:
        time.sleep(2)
    ev = instance.get_latest_materialization_event(key)
    assert ev is not None, "the automation sensor did not start clean/dialog:\n" + dagster_dev["log"].read_text()[-4000:]
    run = instance.get_run_by_id(ev.run_id)
    assert run.asset_selection == {key}, run.asset_selection
    assert any("automat" in k or "sensor" in k for k in run.tags), run.tags  # launched by the sensor, not a click
    page.goto(dagster_dev["url"] + "/automation")
    page.get_by_text("data_stages_follow_parents").first.wait_for()
    page.goto(dagster_dev["url"] + "/assets/clean/dialog")
    page.get_by_text("Latest materialization").wait_for()
    page.get_by_text("Never materialized").wait_for(state="detached")
    page.screenshot(path=str(SCREENSHOTS / "clean-dialog-by-automation.png"), full_page=True)


PLOTS = {  # asset page: metadata entries that carry a plot
    "base_model": ["loss_curve"],
    "chat_model": ["loss_curve"],
    "clean/wiki": ["drops_plot"],
    "evaluation": ["loss_curves", "drops_plot", "report"],
}


def test_asset_pages_render_their_plots_as_images(dagster_dev, page):
    """The whole pipeline (in one process, so it is quick), then each plot on its asset page: the UI renders
    markdown metadata over 1,000 characters behind "[Show Markdown]", so the test opens that and reads the image."""
    import json

    env = {**os.environ, "DAGSTER_HOME": str(dagster_dev["home"]), "PLASMA_RECIPE": str(dagster_dev["recipe"])}
    config = {"execution": {"config": {"in_process": {}}}, "loggers": {"console": {"config": {"log_level": "INFO"}}}}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "plasma_pipeline.definitions",
         "--select", "*", "--config-json", json.dumps(config)],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    widths = {}
    for asset, entries in PLOTS.items():
        page.goto(dagster_dev["url"] + "/assets/" + asset)
        page.get_by_text("Latest materialization").wait_for()
        for entry in entries:
            row = page.locator("tr", has=page.locator("td", has_text=re.compile(rf"^{entry}$"))).first
            row.get_by_text("[Show Markdown]").click()
            img = page.locator("[role=dialog] img").first
            img.wait_for()
            page.wait_for_function("i => i.complete", arg=img.element_handle())
            widths[f"{asset}:{entry}"] = img.evaluate("i => i.naturalWidth")
            page.screenshot(path=str(SCREENSHOTS / f"{asset.replace('/', '-')}-{entry}.png"))
            page.get_by_role("button", name="Close").click()
            page.locator("[role=dialog]").first.wait_for(state="detached")
        page.screenshot(path=str(SCREENSHOTS / f"{asset.replace('/', '-')}-page.png"), full_page=True)
    assert all(w > 0 for w in widths.values()), widths
    assert set(widths) == {f"{a}:{e}" for a, es in PLOTS.items() for e in es}


def test_one_click_carries_a_change_through_the_models_and_evaluation_once(dagster_dev, page):
    """What the README says to click to retrain: Lineage, filter `key:pretrain_shards+`, Materialize all."""
    instance = dg.DagsterInstance.from_config(str(dagster_dev["home"]))
    before = {r.run_id for r in instance.get_runs()}
    page.goto(dagster_dev["url"] + "/asset-groups")
    page.locator("svg").filter(has_text="12_evaluation").first.wait_for()
    page.locator(".CodeMirror").first.click()  # the "Search and filter assets" box is a CodeMirror editor
    page.keyboard.type("key:pretrain_shards+")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"asset-groups~key%3Apretrain_shards%2B"))
    page.get_by_text("01_collect", exact=True).first.wait_for(state="detached")  # the graph shows the filter
    page.get_by_role("button", name=re.compile(r"Materialize all")).first.click()
    want = {dg.AssetKey(k) for k in ("pretrain_shards", "base_model", "chat_model", "evaluation")}
    deadline = time.time() + 420
    run = None
    while time.time() < deadline:
        new = [r for r in instance.get_runs() if r.run_id not in before and r.asset_selection == want]
        if new and new[0].status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                                     dg.DagsterRunStatus.CANCELED):
            run = new[0]
            break
        time.sleep(3)
    page.screenshot(path=str(SCREENSHOTS / "retrain-one-click.png"))
    assert run is not None, ("no run of exactly " + str(want) + " finished: "
                             + str([(r.asset_selection, r.status) for r in instance.get_runs() if r.run_id not in before]))
    assert run.status == dg.DagsterRunStatus.SUCCESS, dagster_dev["log"].read_text()[-4000:]
    mats = [e for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_step_materialization]
    keys = [e.dagster_event.asset_key.to_user_string() for e in mats]
    assert keys.count("evaluation") == 1 and keys[-1] == "evaluation", keys
