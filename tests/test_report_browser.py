"""The Snakemake report of a tiny end-to-end run, opened in a real browser: headless Chromium loads the HTML,
clicks through every category, subcategory and result (tests/report_check.js) and reports what it showed;
every registered table and figure is there, every figure the run drew is in it and renders, each result
category has its menu entry. A screenshot of the training curves is taken too. Skips where Chromium is
missing or cannot start (.ci/run installs Debian's `chromium`)."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from tests.conftest import tiny_run_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
# Headless, no GPU, no network of its own (without these it keeps trying Google's services), and no
# sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def run_chromium(exe: str, profile: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)  # a fresh, empty profile each time: nothing carried between runs
    return subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> str:
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run does)")
    probe = run_chromium(exe, tmp_path_factory.mktemp("probe"), "--dump-dom", "data:text/html,<p>alive</p>")
    if probe.returncode or "alive" not in probe.stdout:
        pytest.skip(f"Chromium cannot start here (exit {probe.returncode}): {probe.stderr.strip()[-300:]}")
    return exe


def snakemake(workdir: Path, *args: str) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=3000,
    )
    assert proc.returncode == 0, f"snakemake {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def tiny_report(browser, tmp_path_factory, smollm2_tokenizer) -> Path:
    """A finished tiny run (one seed; MostPop, BIGRec, +LatentR3, +FLR; 4 test rows) and its report."""
    work = tmp_path_factory.mktemp("report_run")
    cfg = tiny_run_config(work, smollm2_tokenizer)
    cfg["seeds"] = [0]
    cfg["run_methods"] = ["MostPop", "BIGRec", "BIGRec+LatentR3", "BIGRec+FLR"]
    cfg["llm"]["sft"].update(max_steps=2, micro_batch=2, effective_batch=2, train_limit=4, valid_limit=4)
    cfg["llm"]["latent"]["LatentR3"]["rl"].update(
        group_size=2, groups_per_step=2, max_steps=2, train_limit=4, valid_limit=4
    )
    for m in ("BIGRec", "BIGRec+LatentR3", "BIGRec+FLR"):
        cfg["methods"][m]["decode"].update(num_beams=2, num_return=2, max_new_tokens=24)
    cfg["report"]["flr"]["factors"]["rows"] = 4
    cfg["evaluation"]["test_limit"] = 4
    (work / "config").mkdir()
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(work, "--cores", "2")
    snakemake(work, "--report", "report.html")
    return work


def open_report(exe: str, work: Path, show: str | None = None, screenshot: Path | None = None) -> dict | None:
    """Load the report with report_check.js appended in Chromium: the JSON it wrote into the DOM, or (with
    `screenshot`) a PNG of the page once the script ended on category `show`."""
    page = work / "report_check.html"
    script = (ROOT / "tests" / "report_check.js").read_text()
    text = (work / "report.html").read_text(encoding="utf-8")
    head, body_end, tail = text.rpartition("</body>")  # the last one: the embedded libraries hold the string too
    page.write_text(f"{head}<script>{script}</script>\n{body_end}{tail}", encoding="utf-8")
    url = page.as_uri() + (f"#show={quote(show)}" if show else "")
    # Virtual time: the script's waits pass as soon as the page is idle, and the DOM or screenshot is taken
    # after it ran to the end.
    args = ["--virtual-time-budget=120000", "--window-size=1400,1000"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    run = run_chromium(exe, work / "chromium_profile", *args, url)
    assert run.returncode == 0, run.stderr[-2000:]
    if screenshot:
        return None
    found = re.findall(r'<pre id="latentrec-report-check"[^>]*>(.*?)</pre>', run.stdout, re.S)
    assert found, f"the check script did not finish; DOM tail:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    return json.loads(html.unescape(found[-1]))


def registered() -> tuple[set[str], set[str]]:
    """The report categories the rules name, and the report tables (.md) the report rules register."""
    rules = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    categories = set(re.findall(r'\bcategory="([^"]+)"', rules))  # not subcategory=
    tables = set(re.findall(r'report\(\s*"(results/tables/[^"]+\.md)"', rules))
    return categories, tables


def test_the_report_shows_every_category_table_and_figure_in_a_browser(browser, tiny_report):
    work = tiny_report
    seen = open_report(browser, work)
    assert not seen["errors"], seen["errors"]
    categories, tables = registered()
    assert {"Tables", "Figures", "LatentR3", "FLR", "Training curves"} <= categories
    assert set(seen["categories"]) == categories, seen["categories"]
    for name, c in seen["categories"].items():
        assert c["clicked"], f"no menu entry for the category {name!r}: {seen['menu']}"
        assert name in seen["menu"]
    # Every figure the run drew (the report's and each trained model's curves) is in the report and renders.
    figures = {str(p.relative_to(work)) for p in (work / "results").rglob("*.png")}
    curves = {f for f in figures if f.endswith("/training_curves.png")}
    assert curves == {
        "results/Synthetic_Music/sft/seed0/training_curves.png",
        "results/Synthetic_Music/latent/LatentR3/seed0/warmup/training_curves.png",
        "results/Synthetic_Music/latent/LatentR3/seed0/rl/default/training_curves.png",
        "results/Synthetic_Music/latent/FLR/seed0/warmup/training_curves.png",
    }
    for path in sorted(figures):
        shown = seen["results"].get(path)
        assert shown, f"{path} is not in the report (shown: {sorted(seen['results'])})"
        assert shown["kind"] == "image" and shown["width"] > 200 and shown["height"] > 200, (path, shown)
    for path in sorted(curves):
        assert seen["results"][path]["category"] == "Training curves"
        assert seen["results"][path]["subcategory"] == "Synthetic_Music"
    labels = {seen["results"][p]["label"] for p in curves}
    assert any("SFT (BIGRec, D3)" in lab for lab in labels) and any("RL" in lab and "default" in lab for lab in labels)
    # Every registered table of this run is a download link that delivers the whole Markdown file.
    tables = {t for t in tables if (work / t).exists()}
    assert {"results/tables/table1.md", "results/tables/latentr3_gains.md", "results/tables/flr_table2.md"} <= tables
    for path in sorted(tables):
        shown = seen["results"].get(path)
        rows = [line for line in (work / path).read_text().splitlines() if line.startswith("|")]
        assert shown and shown["kind"] == "download" and shown["bytes"] > 0, (path, shown)
        assert shown["table_rows"] == len(rows), (path, shown)
    assert seen["results"]["results/tables/table1.md"]["table_rows"] >= 6
    assert not [p for p in seen["results"] if p.startswith("?")], seen["results"]

    shot = work / "report_training_curves.png"
    open_report(browser, work, show="Training curves", screenshot=shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if keep := os.environ.get("LATENTREC_REPORT_SCREENSHOT"):  # CI or a reviewer may keep it to look at
        shutil.copy(shot, keep)
