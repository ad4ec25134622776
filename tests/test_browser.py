"""pareto.html in a real browser: headless Chromium (Debian's; `.ci/run` installs it) renders every trial."""

from __future__ import annotations

import html
import itertools
import json
import os
import re
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


# Writes the page's widths into <body data-widths=...> once plotly has laid it out, for --dump-dom to carry out.
WIDTH_PROBE = """<script>window.addEventListener('load', () => setTimeout(() => {
  const page = document.documentElement;
  document.body.setAttribute('data-widths', JSON.stringify({scroll: page.scrollWidth, view: page.clientWidth}));
}, 500));</script>"""


def dump_probed_page(chromium: str, run, tmp_path, width: int) -> tuple[str, dict[str, int]]:
    """(the DOM of pareto.html in a width x 900 window, the page's scroll and viewport widths there)."""
    probed = tmp_path / "probed.html"
    probed.write_text((run / "pareto.html").read_text().replace("</body>", WIDTH_PROBE + "</body>"))
    dom = run_chromium(chromium, tmp_path / "profile", f"--window-size={width},900", "--dump-dom", probed.as_uri())
    found = re.search(r'data-widths="([^"]*)"', dom)
    assert found, "the probe did not run"
    return dom, json.loads(html.unescape(found.group(1)))


def legend_entries(dom: str) -> dict[str, tuple[str, str]]:
    """Each legend entry's text -> (its symbol's SVG path, its fill); a group's title (no symbol) is left out."""
    entries = {}
    for chunk in dom.split('<g class="traces"')[1:]:
        name = re.search(r'class="legendtext"[^>]*data-unformatted="([^"]*)"', chunk)
        symbol = re.search(r'<path class="scatterpts"[^>]* d="([^"]*)"[^>]*fill: (rgb\([^)]*\))', chunk)
        assert name, chunk[:300]
        if not symbol:
            continue
        assert name.group(1) not in entries, f"{name.group(1)} is in the legend twice"
        entries[name.group(1)] = symbol.groups()
    return entries


def is_circle(path: str) -> bool:
    return "A" in path and "L" not in path  # plotly draws a circle with two arcs; diamonds and stars with lines


def is_grey(fill: str) -> bool:
    return len(set(re.findall(r"\d+", fill))) == 1


def test_pareto_legend_keys_colour_to_mode_and_marker_to_membership(chromium, finished_digits_run, tmp_path):
    dom, widths = dump_probed_page(chromium, finished_digits_run, tmp_path, 1400)
    entries = legend_entries(dom)
    table = pd.read_csv(finished_digits_run / "trials.csv")
    modes = set(table.loc[table["state"] == "COMPLETE", "parallelism"])
    assert modes <= set(entries), entries.keys()
    for mode in modes:
        path, fill = entries[mode]
        assert is_circle(path) and not is_grey(fill), (mode, path, fill)
    assert len({entries[mode][1] for mode in modes}) == len(modes), "two modes share a colour"
    member, baseline = entries["Pareto member"], entries["fp32 baseline"]
    assert re.fullmatch(r"M[\d.]+,0L0,[\d.]+L-[\d.]+,0L0,-[\d.]+Z", member[0]), member  # plotly's diamond
    assert not is_circle(baseline[0]) and baseline[0] != member[0]
    assert is_grey(member[1]) and is_grey(baseline[1]), "a membership marker is drawn in a mode's colour"
    assert widths["scroll"] <= widths["view"], widths


def test_pareto_page_fits_a_narrower_window(chromium, finished_digits_run, tmp_path):
    _, widths = dump_probed_page(chromium, finished_digits_run, tmp_path, 1024)
    assert widths["scroll"] <= widths["view"], widths
