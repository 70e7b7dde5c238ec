"""End to end in a real browser: Debian chromium driven by Playwright against `streamlit run`.

One round of the loop through the dashboard on the tiny demo corpus with a tiny random model:
query (scoring job → propose) → approve → oracle label → a short fine-tune (a few steps) → the
Embedding page (clicking a case opens it) → the Viewer page. Every step waits for what the user
would wait for (a button, a status line), never for a fixed time. Screenshots go to the test's
tmp folder; with ASSFT_UPDATE_SCREENSHOTS=1 the key ones are copied to docs/screenshots/.

Skipped only when /usr/bin/chromium is absent (`bash scripts/test.sh` installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch

from assft_core.config import InferenceConfig, PreprocessConfig, ProjectConfig, SSFTConfig, TrainConfig
from assft_core.errors import StateError
from assft_core.models.card import ModelCard
from assft_core.session import jobs, labels, rounds, store
from assft_core.session.project import create_project
from assft_core.session.rounds import RoundState

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = ROOT / "docs" / "screenshots"
# Screenshots worth keeping in the docs (the README shows two of them).
KEY_SHOTS = ("query", "labels", "finetune", "embedding", "viewer", "viewer-errors")
ROI = (32, 32, 32)
SERVER_START_S = 90.0
JOB_S = 240.0  # a job's process imports torch and MONAI first: slow on a busy 2-core machine
VIEWPORT = {"width": 1600, "height": 1000}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium not installed at /usr/bin/chromium: "
                       "run `bash scripts/test.sh` (it installs it) or `apt-get install chromium`"),
]


def _tiny_model(folder: Path) -> Path:
    """A random 2-level BatchNorm UNet for the tiny corpus (4 mm grid, 4 classes), with its card."""
    from assft_core.models.loaded import save_model
    from assft_core.models.registry import get_backbone

    card = ModelCard(
        backbone="unet",
        in_channels=1,
        classes={0: "background", 1: "CSF", 2: "grey_matter", 3: "white_matter"},
        roi_size=ROI,
        backbone_kwargs={"channels": [4, 8], "strides": [2], "num_res_units": 1},
        preprocess=PreprocessConfig(spacing_mm=(4.0, 4.0, 4.0)),
    )
    torch.manual_seed(0)
    network = get_backbone("unet").make(1, 4, card.backbone_kwargs)
    return save_model(network, card, folder)


def _config() -> ProjectConfig:
    """Small enough for a 2-core machine: 32³ patches, 4 + 2 training steps, fast heartbeats."""
    return ProjectConfig(
        budget=2,
        heartbeat_s=0.5,
        preprocess=PreprocessConfig(spacing_mm=(4.0, 4.0, 4.0)),
        inference=InferenceConfig(roi_size=ROI, sw_batch_size=1, device="cpu"),
        train=TrainConfig(patch_size=ROI, batch_size=1, unlabelled_batch_size=1, checkpoint_every=2, device="cpu"),
        ssft=SSFTConfig(supervised_steps=4, ssft_steps=2),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def server(tmp_path: Path, tiny_demo_corpus: Path) -> Iterator[tuple[str, Path]]:
    """`streamlit run app/main.py -- --project P` on a fresh oracle project; yields (URL, project folder)."""
    project = create_project(tmp_path / "proj", tiny_demo_corpus, _tiny_model(tmp_path / "model"),
                             config=_config(), oracle=True)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "ASSFT_PROJECT"}
    env.update(OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 - closed after the process ends
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--", "--project", str(project.folder)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start; log:\n{(tmp_path / 'streamlit.log').read_text()}")
            time.sleep(0.5)
        yield url, project.folder
    finally:
        for job in jobs.list_jobs(project):  # a failed run must not leave a job process behind
            if job.status in jobs.ACTIVE:
                with contextlib.suppress(StateError):  # it may finish in between
                    jobs.cancel_job(project, job.id, grace_s=5.0)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Shots:
    """Numbered screenshots of the whole page in a folder; the key ones copied to docs on request.

    Streamlit scrolls inside its main container, so a "full page" capture would stop at the
    window: the window is stretched to the content's height for each capture instead.
    """

    def __init__(self, page, folder: Path) -> None:  # noqa: ANN001 - a Playwright page
        self.page, self.folder, self.taken = page, folder, {}

    def take(self, name: str) -> Path:
        self.page.wait_for_timeout(800)  # let plotly and the data grids finish drawing
        height = self.page.evaluate(
            "document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight"
        )
        self.page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height) + 80)})
        self.page.wait_for_timeout(400)
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        self.page.set_viewport_size(VIEWPORT)
        self.taken[name] = path
        return path

    def publish(self) -> None:
        """Copy the key screenshots to docs/screenshots/ when ASSFT_UPDATE_SCREENSHOTS=1."""
        if os.environ.get("ASSFT_UPDATE_SCREENSHOTS") != "1":
            return
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in KEY_SHOTS:
            tmp = SCREENSHOTS / f".{name}.png.tmp"
            shutil.copyfile(self.taken[name], tmp)
            os.replace(tmp, SCREENSHOTS / f"{name}.png")


def _goto(page, url: str, title: str) -> None:  # noqa: ANN001
    page.goto(url)
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=60_000)


def _no_exception(page) -> None:  # noqa: ANN001
    """Streamlit draws an uncaught exception as an element with a traceback: there must be none."""
    assert page.locator("[data-testid='stException']").count() == 0, page.locator("[data-testid='stException']").first.inner_text()


def test_one_round_through_the_browser(server: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from assft_core.session.project import open_project

    url, folder = server
    project = open_project(folder)
    started, marks = time.monotonic(), {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            requested: list[str] = []  # every URL the page asks for: none may leave 127.0.0.1
            page.on("request", lambda request: requested.append(request.url))
            shots = Shots(page, tmp_path)

            _goto(page, f"{url}/query", "Query")
            page.get_by_role("button", name="Score the pool").click()
            propose = page.get_by_role("button", name="Propose picks")
            propose.wait_for(timeout=JOB_S * 1000)
            marks["scoring job"] = time.monotonic()
            propose.click()
            approve = page.get_by_role("button", name="Approve all 2 pending")
            approve.wait_for(timeout=60_000)
            page.locator("[data-testid='stDataFrame'] canvas").first.wait_for()
            # Each pick with its thumbnail; pick 2 names pick 1, the case its diversity was measured against.
            expect(page.locator("[data-testid='stImage'] img")).to_have_count(2, timeout=60_000)
            first, second = rounds.list_queries(project)
            if second.explanation.get("nearest_kind") == "picked":
                expect(page.get_by_text(f"Most similar case already chosen: {second.explanation['nearest_id']} "
                                        "(picked earlier this round)")).to_be_visible()
            expect(page.get_by_text("Next in line")).to_be_visible()
            shots.take("query")
            approve.click()
            expect(page.get_by_text("Round 0: picks approved, waiting for labels")).to_be_visible(timeout=60_000)
            _no_exception(page)
            picks = [q.case_id for q in rounds.list_queries(project) if q.status.value == "approved"]
            assert len(picks) == 2

            _goto(page, f"{url}/labels", "Labels")
            # An upload is previewed over the image before anything is stored (the case's reference label here).
            with store.reading(project.db) as conn:
                reference = conn.execute("SELECT reference_label FROM cases WHERE case_id = ?", (picks[0],)).fetchone()[0]
            page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(reference)
            expect(page.get_by_text(f"fits the image of {picks[0]}")).to_be_visible(timeout=60_000)
            expect(page.get_by_role("button", name="Download the image", exact=True)).to_have_count(2)
            _no_exception(page)
            shots.take("labels")
            assert labels.current_labels(project) == {}  # previewed, not stored
            page.get_by_role("button", name="Label 2 case(s) with the oracle (demo)").click()
            expect(page.get_by_text("Every approved case has a label")).to_be_visible(timeout=60_000)

            _goto(page, f"{url}/finetune", "Fine-tune")
            expect(page.get_by_text("Expected time of this fine-tuning")).to_be_visible(timeout=60_000)
            shots.take("finetune")
            page.get_by_role("button", name="Fine-tune", exact=True).click()
            page.get_by_text("Results of train job").wait_for(timeout=JOB_S * 1000)
            marks["fine-tune job"] = time.monotonic()
            _no_exception(page)
            shots.take("finetune-results")
            assert rounds.current_round(project).state in (RoundState.TRAINED, RoundState.EVALUATED)

            _goto(page, f"{url}/embedding", "Embedding")
            chart = page.locator("[data-testid='stPlotlyChart']").first
            chart.locator(".trace.scatter .point").first.wait_for(timeout=JOB_S * 1000)
            marks["embedding (UMAP)"] = time.monotonic()
            _no_exception(page)
            shots.take("embedding")
            # The first trace holds the labelled cases (status order), drawn on top (its own z-layer,
            # so found by trace index, not DOM order); click its first marker where plotly draws it
            # (plotly takes clicks on its drag layer by position): the Viewer opens it.
            clicked = chart.locator(".js-plotly-plot").evaluate("plot => plot.data[0].customdata[0][0]")
            assert clicked in picks
            layer = chart.locator(".js-plotly-plot").evaluate(
                "plot => Array.from(plot.querySelectorAll('.trace.scatter')).findIndex(t => t.__data__[0].trace.index === 0)")
            box = chart.locator(".trace.scatter").nth(layer).locator(".point").first.bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.get_by_role("heading", name="Viewer", exact=True).wait_for(timeout=60_000)
            case_box = page.get_by_role("combobox", name="Case")
            case_box.wait_for(timeout=60_000)
            assert f"{clicked} · site" in case_box.aria_snapshot()
            planes = page.locator("[data-testid='stPlotlyChart']")
            expect(planes).to_have_count(3, timeout=60_000)
            sagittal = planes.nth(2).locator(".js-plotly-plot")
            names = "plot => plot.data.map(trace => trace.name)"
            assert "prediction" in sagittal.evaluate(names) and "entropy" not in sagittal.evaluate(names)
            # Switch the overlays in the browser: entropy on (its colour bar appears), prediction off.
            page.get_by_role("button", name="entropy", exact=True).click()
            planes.nth(2).locator(".colorbar").wait_for(timeout=60_000)
            page.get_by_role("button", name="prediction", exact=True).click()
            page.wait_for_function(
                "() => { const p = document.querySelectorAll('.js-plotly-plot')[2];"
                " return p && !p.data.some(t => t.name === 'prediction'); }",
                timeout=60_000,
            )
            assert "entropy" in sagittal.evaluate(names)
            # The model selector: f_1, fine-tuned in round 0, is run on the case on demand; drawn with the
            # label as outline and the prediction as fill, then the error view; a legend by each view.
            page.get_by_role("combobox", name="Model").click()
            page.get_by_role("option", name="model fine-tuned in round 0 (f₁)").click()
            expect(page.get_by_text("prediction computed now with the model fine-tuned in round 0 (f₁)")).to_be_visible(timeout=JOB_S * 1000)
            shown = ("() => { const p = document.querySelectorAll('.js-plotly-plot')[2]; if (!p) return false;"
                     " const n = p.data.map(t => t.name); return %s; }")
            # One overlay switch at a time, each waited for in the figure before the next.
            for overlay, check in (("entropy", "!n.includes('entropy')"), ("ROI", "!n.includes('ROI')"),
                                   ("prediction", "n.includes('prediction')")):
                page.get_by_role("button", name=overlay, exact=True).click()
                page.wait_for_function(shown % check, timeout=60_000)
            assert planes.nth(0).locator(".legend").count() == 1  # a legend by each view, not only the last
            _no_exception(page)
            shots.take("viewer")
            page.get_by_role("button", name="prediction", exact=True).click()
            page.wait_for_function(shown % "!n.includes('prediction')", timeout=60_000)
            page.get_by_role("button", name="errors", exact=True).click()
            page.wait_for_function(shown % "n.includes('errors')", timeout=60_000)
            _no_exception(page)
            shots.take("viewer-errors")
            marks["viewer"] = time.monotonic()
            # Back on the Embedding page the old click is gone: the page stays (no bounce to the Viewer).
            page.get_by_role("link", name="Embedding").click()
            page.get_by_role("heading", name="Embedding", exact=True).wait_for(timeout=60_000)
            chart.locator(".trace.scatter .point").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            assert page.get_by_role("heading", name="Embedding", exact=True).is_visible()
        finally:
            browser.close()
    external = sorted({u for u in requested if urlsplit(u).hostname not in ("127.0.0.1", "localhost", None)
                       and not u.startswith(("data:", "blob:"))})
    assert requested and not external, f"the dashboard asked hosts beyond 127.0.0.1 for: {external}"
    shots.publish()
    previous, lines = started, []
    for name, at in marks.items():
        lines.append(f"{name}: {at - previous:.0f} s")
        previous = at
    print("browser test phases: " + ", ".join(lines))
