"""pareto.html in a real browser: headless Chromium (Debian's; `.ci/run` installs it) renders every trial."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

import matplotlib.image
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# This machine's network is closed: without these, Chromium keeps trying to reach Google's hosts.
QUIET_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--virtual-time-budget=15000"]


@pytest.fixture()
def chromium() -> str:
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("OPTSEARCH_REQUIRE_BROWSER"):  # set by .ci/run, which installs it: there, absence is a failure
        pytest.fail("chromium is not installed")
    pytest.skip("needs chromium (apt-get install chromium)")


def run_chromium(chromium: str, profile, *args: str) -> str:
    done = subprocess.run([chromium, *QUIET_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_pareto_page_plots_one_point_per_completed_trial_in_every_panel(chromium, finished_digits_run, tmp_path):
    page = (finished_digits_run / "pareto.html").resolve().as_uri()
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", page)
    completed = int((pd.read_csv(finished_digits_run / "trials.csv")["state"] == "COMPLETE").sum())
    panels = len(list(itertools.combinations(range(4), 2)))  # four objectives, one panel per pair
    assert dom.count('class="point"') == completed * panels
    assert "on the Pareto front" in dom


def test_pareto_page_screenshot_is_not_blank(chromium, finished_digits_run, tmp_path):
    shot = tmp_path / "pareto.png"
    run_chromium(chromium, tmp_path / "profile", "--window-size=1400,900", f"--screenshot={shot}",
                 (finished_digits_run / "pareto.html").resolve().as_uri())
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (900, 1400)
    assert pixels[..., :3].std() > 0.05, "the page rendered as a flat colour"
