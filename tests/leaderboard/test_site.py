"""`protobench leaderboard site`: the static site of a store of every task, its figures,
the commands that reproduce a row (run again here), and the pages in a real headless
browser (Debian's chromium; `.ci/run` installs it)."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from protobench.cli import app
from protobench.leaderboard.commands import cli_argv, rerun_line
from protobench.leaderboard.site import build_site
from protobench.tasks import ResultStore
from protobench.tasks.continual import ContinualConfig, run_continual
from protobench.tasks.fewshot import FewShotConfig, run_fewshot
from protobench.tasks.ood import OODConfig, run_ood

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """digits 8x8: ncm and ncm without normalisation over seeds 0,1 (paired: same
    episodes), ncm without centring over seeds 2,3 (other episodes: marked); finetune and
    joint over seeds 0,1 (3 experiences); ce with two OOD scores over seeds 0,1."""
    root = tmp_path_factory.mktemp("site")
    path = str(root / "r.sqlite")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    few = dict(dataset="digits", method="ncm", shots=(1, 5), episodes=30, store=path,
               progress=False, plot=False, device="cpu", dataset_options={"image_size": 8})
    run_fewshot(FewShotConfig(**few, seeds=(0, 1)))
    run_fewshot(FewShotConfig(**few, seeds=(0, 1), method_params={"normalise": False}))
    run_fewshot(FewShotConfig(**few, seeds=(2, 3), method_params={"centre": False}))
    cont = dict(dataset="digits", experiences=3, epochs=1, backbone="mlp", num_classes=6,
                dataset_options={"image_size": 8}, device="cpu", store=path, progress=False,
                plot=False)
    for m in ("finetune", "joint"):
        run_continual(ContinualConfig(method=m, seeds=(0, 1), run_dir=str(root / m), **cont))
    run_ood(OODConfig(id="digits:0-4", ood="digits:5-9", method="ce", epochs=1,
                      scores=("msp", "knn"), backbone="mlp", dataset_options={"image_size": 8},
                      device="cpu", seeds=(0, 1), store=path, progress=False, plot=False,
                      run_dir=str(root / "o")))
    yield ResultStore(path)
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def site(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "site"
    return build_site(store.path, out, store_text="leaderboards/results.sqlite")


class Rows(HTMLParser):
    """The board table's rows (their data-* attributes) and the figures of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "row" in (a.get("class") or "").split():
            self.rows.append(a)
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])


def parse(path: Path) -> Rows:
    p = Rows()
    p.feed(path.read_text())
    return p


def test_every_record_appears_once_and_every_figure_is_an_svg(store, site):
    ids = sorted(r.id for r in store.records())
    seen = []
    pages = {p.name: parse(p) for p in site.pages}
    for page in pages.values():
        for row in page.rows:
            seen += [int(i) for i in row["data-rows"].split(",")]
        for src in page.images:
            svg = (site.out / "boards" / src).resolve()
            assert svg.is_file(), src
            assert ET.parse(svg).getroot().tag.endswith("svg")
    assert sorted(seen) == ids  # each record once, on one board
    assert {p.name for p in site.pages} == {"index.html", "fewshot-digits.html",
                                            "continual-digits.html", "ood-digits.html"}
    index = pages["index.html"]
    assert {f"boards/{n}" for n in pages if n != "index.html"} <= set(index.links)
    figures = {name: [Path(s).name for s in p.images] for name, p in pages.items()}
    assert any(f.startswith("shots-5way") for f in figures["fewshot-digits.html"])
    assert any(f.startswith("experiences-") for f in figures["continual-digits.html"])
    assert any(f.startswith("matrix-row") for f in figures["continual-digits.html"])
    assert any(f.startswith("roc-") and "digits-5-9" in f for f in figures["ood-digits.html"])
    assert sum(f.startswith("diff-") for f in figures["fewshot-digits.html"]) == 2  # 2 shots


def test_aggregated_rows_markers_and_paired_differences(store, site):
    page = (site.out / "boards" / "fewshot-digits.html").read_text()
    rows = parse(site.out / "boards" / "fewshot-digits.html").rows
    assert len(rows) == 6  # 3 configurations x 2 shots
    for row in rows:
        recs = [store.get(int(i)) for i in row["data-rows"].split(",")]
        seeds = sorted(int(p["seed"]) for r in recs for p in r.per_seed)
        assert row["data-seeds"] == ",".join(map(str, seeds))
    # ncm without centring drew seeds 2,3: other episodes, marked; the two others are not
    marks = re.findall(r'<tr class="row"[^>]*data-seeds="([^"]+)"[^>]*>(.*?)</tr>', page,
                       flags=re.S)
    assert sorted(seeds for seeds, body in marks if 'class="marker"' in body) == ["2,3", "2,3"]
    # 5w1s: the best configuration against the other one on the same episodes (seeds 0,1):
    # the mean of their per-episode differences in the stored samples
    pair = [r for r in store.records("fewshot/digits", samples=True)
            if r.setting["shots"] == 1 and list(r.seeds) == [0, 1]]
    a, b = sorted(pair, key=lambda r: -r.primary.value)
    diffs = np.concatenate([np.subtract(a.samples[h], b.samples[h]) for h in a.samples])
    m = re.search(r"<td>5w1s 15q</td><td>[^<]+</td><td>[^<]+</td>\s*<td>(\d+) episodes</td>"
                  r"<td>[^<]+</td><td>[^<]+</td>\s*<td>([-\d.]+) \(", page)
    assert m, "no paired comparison for 5w1s"
    assert int(m.group(1)) == diffs.size == 60
    assert float(m.group(2)) == pytest.approx(100 * diffs.mean(), abs=0.006)
    assert page.count('class="unpaired"') == 0


def test_cli_lines_reproduce_their_rows(store, tmp_path):
    """The full CLI line of a row of each task, run again, writes the same metrics."""
    picks = [next(r for r in store.records("fewshot/digits")
                  if r.method_params.get("normalise") is False),
             next(r for r in store.records("continual/digits") if r.method == "finetune"),
             next(r for r in store.records("ood/digits") if r.method == "ce+knn")]
    again = tmp_path / "again.sqlite"
    torch.set_num_threads(1)
    for r in picks:
        argv = cli_argv(r)
        assert argv[:2] == ["protobench", r.task] and "--store" not in argv
        res = runner.invoke(app, [*argv[1:], "--store", str(again), "--no-progress"])
        assert res.exit_code == 0, res.output
        (new,) = [x for x in ResultStore(again).records(r.board)
                  if x.method == r.method and x.setting == r.setting][-1:]
        assert new.seeds == r.seeds
        for k, m in r.metrics.items():
            assert new.metrics[k].value == pytest.approx(m.value, abs=1e-12), (r.method, k)
    assert rerun_line(picks[0], "s.sqlite") == f"protobench rerun {picks[0].id} --store s.sqlite"


def test_cli_site_command_and_bad_input(store, tmp_path):
    out = tmp_path / "s"
    res = runner.invoke(app, ["leaderboard", "site", "--store", str(store.path), "--out",
                              str(out)])
    assert res.exit_code == 0, res.output
    assert "3 boards" in res.output and (out / "index.html").is_file()
    res = runner.invoke(app, ["leaderboard", "site", "--store", str(tmp_path / "none.sqlite"),
                              "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "no results store" in res.output
    assert not (tmp_path / "t").exists() and not (tmp_path / "none.sqlite").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["leaderboard", "site", "--store", str(store.path), "--out",
                              str(busy)])
    assert res.exit_code == 2 and "holds no site" in res.output
    assert (busy / "notes.txt").read_text() == "mine"


# ---- a real headless browser --------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _open(browser, path: Path) -> None:
    browser.get(path.as_uri())
    browser.get_log("browser")  # a fresh log per page


def _errors(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _values(browser, key: str) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#board tbody tr'))"
        f".map(r => r.querySelector('td[data-key=\"{key}\"]').dataset.sort)")


def test_pages_in_a_headless_browser(browser, store, site, tmp_path):
    from selenium.webdriver.common.by import By

    seen: list[int] = []
    for page in site.pages:
        _open(browser, page)
        browser.execute_script("return document.readyState")
        shot = tmp_path / f"{page.stem}.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if page.name == "index.html":
            assert not _errors(browser)
            continue
        rows = browser.find_elements(By.CSS_SELECTOR, "#board tbody tr")
        seen += [int(i) for r in rows for i in r.get_attribute("data-rows").split(",")]
        # every figure loaded (a broken image has no natural width)
        assert browser.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        # sorting by the value column reorders the rows, ascending then descending
        before = _values(browser, "value")
        th = browser.find_element(By.CSS_SELECTOR, '#board th[data-key="value"]')
        th.click()
        asc = [float(v) for v in _values(browser, "value")]
        assert asc == sorted(asc) and asc != [float(v) for v in before]
        th.click()
        desc = [float(v) for v in _values(browser, "value")]
        assert desc == sorted(desc, reverse=True)
        browser.find_element(By.CSS_SELECTOR, '#board th[data-key="method"]').click()
        methods = [v for v in _values(browser, "method")]
        assert methods == sorted(methods, key=str.lower)
        # filtering by setting keeps that setting's rows only
        settings = sorted({r.get_attribute("data-setting") for r in rows})
        browser.execute_script(
            "const s = document.getElementById('setting-filter'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('change'));", settings[0])
        visible = [r for r in rows if r.is_displayed()]
        assert visible and all(r.get_attribute("data-setting") == settings[0] for r in visible)
        assert browser.find_element(By.ID, "shown").text == f"{len(visible)} shown"
        # a row's detail view shows the reproduce command of each of its rows
        visible[0].click()
        dialog = browser.find_element(By.ID, "detail")
        assert dialog.get_attribute("open") is not None
        first = int(visible[0].get_attribute("data-rows").split(",")[0])
        text = dialog.text
        assert f"protobench rerun {first} --store leaderboards/results.sqlite" in text
        assert f"protobench {store.get(first).task} " in text  # the full CLI line
        assert browser.save_screenshot(str(tmp_path / f"{page.stem}_detail.png"))
        browser.find_element(By.CSS_SELECTOR, "dialog .close").click()
        assert dialog.get_attribute("open") is None
        assert not _errors(browser), page.name
    assert sorted(seen) == sorted(r.id for r in store.records())


@pytest.mark.parametrize("value", ["mlp", "true", "1", "0.5", "a b", "omniglot:all", "foo:",
                                   "digits:0-4", "", "null", "1e-3", ".inf", "x=1", "No",
                                   "~", "a/b.pt", "[1, 2]", 3, 0.1, True, None, [1, 2],
                                   {"m": 128, "pool": "test"}])
def test_values_read_back_as_written(value):
    """A value in a CLI line reads back (as `--param k=v` does: YAML) as the value itself."""
    import yaml

    from protobench.leaderboard.commands import _value

    text = _value(value)
    assert (yaml.safe_load(text) if text else "") == value


def test_detail_records_carry_provenance_and_checksums(store, site):
    import json

    from protobench.datasets import load_dataset

    page = (site.out / "boards" / "fewshot-digits.html").read_text()
    blob = re.search(r'<script id="records" type="application/json">(.*?)</script>', page,
                     flags=re.S).group(1)
    records = json.loads(blob)
    assert sorted(map(int, records)) == sorted(r.id for r in store.records("fewshot/digits"))
    test = load_dataset("digits", "test", image_size=8)
    for rid, d in records.items():
        r = store.get(int(rid))
        assert d["data"]["checksum"] == test.checksum  # the evaluated split's content hash
        assert d["hashes"] == [p["manifest_hash"] for p in r.per_seed]
        assert d["seeds"] == [0, 1] or d["seeds"] == [2, 3]
        assert d["method_params"] == r.method_params and d["preset"] == r.config["preset"]
        assert d["versions"]["protobench"] and d["git_revision"] == r.git_revision
        assert d["device"] == r.device and d["wall_time_s"] == r.wall_time_s
        assert d["rerun"] == f"protobench rerun {rid} --store leaderboards/results.sqlite"
        assert d["cli"].startswith("protobench fewshot --dataset digits --method ncm")
    cont = (site.out / "boards" / "continual-digits.html").read_text()
    blob = re.search(r'<script id="records" type="application/json">(.*?)</script>', cont,
                     flags=re.S).group(1)
    for rid, d in json.loads(blob).items():
        r = store.get(int(rid))
        fits = r.config["fit"]["per_seed"]
        assert [m["rows"] for m in d["matrices"]] == [f["accuracy_matrix"] for f in fits]
        assert set(d["data"]["checksum"]) == {"train", "test"}
