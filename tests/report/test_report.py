"""The HTML report: self-contained, rendered in headless Chromium (coloured cells, SVG charts, working filters)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from dqd_server.evaluation.run import evaluate_pair
from dqd_server.report import render_report, report_data

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (Debian package 'chromium'); the report test needs it in CI")
        pytest.skip("chromium is not installed (apt-get install chromium) — the report rendering test is skipped")
    return path


def run_chromium(chromium: str, tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
                          capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("report")
    cities = [("Bend", "OR"), ("Gary", "IN"), ("Austin", "TX"), ("Denver", "CO")]
    clean, dirty = [], []
    for i in range(200):
        city, state = cities[i % 4]
        row = {"id": str(i), "size": ["12", "16"][i % 2], "city": city, "state": state, "note": "<b>x</b>"}
        clean.append(row)
        d = dict(row)
        if i % 10 == 0:
            d["size"] = row["size"] + " oz"
        if i in (41, 97):
            d["state"] = "OH"
        dirty.append(d)
    dp, cp = tmp / "dirty.csv", tmp / "clean.csv"
    pacsv.write_csv(pa.Table.from_pylist(dirty), dp)
    pacsv.write_csv(pa.Table.from_pylist(clean), cp)
    ev = evaluate_pair(dp, cp, name="shops")
    page = render_report(ev.dirty, ev.findings, evaluation=ev.result, truth=ev.truth, path=tmp / "report.html",
                         title="shops evaluation")
    return page, ev.result


def test_report_is_self_contained(evaluated: tuple[Path, dict]) -> None:
    page, _ = evaluated
    text = page.read_text(encoding="utf-8")
    assert "<script src" not in text and "<link" not in text and "http://" not in text.replace(
        "http://www.w3.org/2000/svg", "") and "https://" not in text
    assert "<b>x</b>" not in text  # cell text is data, never markup
    assert 'id="dqd-data"' in text


def test_report_data_counts_and_row_cap() -> None:
    table = pa.table({"a": [str(i) for i in range(50)], "b": ["x"] * 50})
    findings = pa.Table.from_pylist([
        dict(row=3, column="b", field="f", method="validation", code="C", message="m", confidence=0.9, value="x"),
        dict(row=7, column="a", field="f", method="pattern", code="C", message="m", confidence=0.4, value="7"),
        dict(row=9, column="a", field="f", method="pattern", code="OK", message="", confidence=0.0, value="9"),
    ])
    d = report_data(table, findings, max_rows=10)
    assert d["counts"]["by_column"] == {"a": {"pattern": 1}, "b": {"validation": 1}}
    assert d["shown_rows"] == 2 and [r for r, _ in d["rows"]] == [3, 7] and d["total_findings"] == 2
    assert report_data(table, findings)["shown_rows"] == 50


def test_report_from_a_file_path(tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text("a,b\n1,N/A\n2,\n", encoding="utf-8")
    findings = pa.Table.from_pylist([dict(row=0, column="b", field="f", method="validation", code="NULL_TOKEN",
                                          message="'N/A' stands for a missing value", confidence=0.9, value="N/A")])
    page = render_report(data, findings, path=tmp_path / "r.html")
    assert "t.csv" in page.read_text(encoding="utf-8")


def _flagged_methods(dom: str) -> set[str]:
    return set(re.findall(r'class="flag m-([a-z]+)', dom))


def test_rendered_in_chromium(chromium: str, evaluated: tuple[Path, dict], tmp_path: Path) -> None:
    page, result = evaluated
    url = page.resolve().as_uri()
    dom = run_chromium(chromium, tmp_path, url, "--dump-dom").stdout
    assert "shops evaluation" in dom
    # coloured flagged cells with their messages on hover
    tags = re.findall(r'<td class="flag m-([a-z]+)[^"]*"([^>]*)>', dom)
    cells = [(m, re.search(r'title="([^"]*)"', attrs).group(1)) for m, attrs in tags
             if re.search(r'style="background: rgb\(\d+, \d+, \d+\);"', attrs)]
    assert cells and len(cells) == len(tags), dom[:2000]
    assert {"validation", "dependency", "combined"} & {m for m, _ in cells}
    assert any("oz" in title for _, title in cells)
    # charts and the evaluation tables
    assert dom.count("<svg") >= 3 and 'data-method="validation"' in dom and 'id="pr-curve"' in dom
    assert '<polyline' in dom and 'id="column-scores"' in dom and f"F1 {result['overall']['f1']:.3f}" in dom
    # the filter from the URL: only dependency findings are shown
    dep = run_chromium(chromium, tmp_path, url + "#method=dependency", "--dump-dom").stdout
    assert 'data-filter="column=;method=dependency;min=0"' in dep
    assert _flagged_methods(dep) == {"dependency"}
    flagged = int(re.search(r'data-flagged-cells="(\d+)"', dep).group(1))
    assert flagged == result["methods"]["dependency"]["flagged"] == 2
    by_col = run_chromium(chromium, tmp_path, url + "#column=size&min=0.5", "--dump-dom").stdout
    assert re.search(r'data-flagged-cells="(\d+)"', by_col).group(1) == "20"  # the 20 unit variants (one per row)
    # and it draws: a screenshot
    shot = tmp_path / "report.png"
    run_chromium(chromium, tmp_path, url, f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.is_file() and shot.stat().st_size > 20_000


def test_client_check_report_rendered_in_chromium(chromium: str, server, tmp_path: Path) -> None:  # noqa: ANN001
    """`dqd-client check … --report` against a real server: the flagged rows of a streamed file, in Chromium."""
    from dqd_client._cli import main as client_main

    rows = ["78% Viscose - 22% Nylon"] * 3000 + ["78% Viscose - 22% Nylonn", ""] + ["100% Cotton"] * 3000
    data = tmp_path / "products.csv"
    data.write_text("material,colour\n" + "".join(f'"{m}",Black\n' for m in rows), encoding="utf-8")
    report = tmp_path / "check.html"
    code = client_main(["check", str(data), "--target", server.target, "--map", "material=material",
                        "--map", "colour=color_name", "--batch-size", "1000", "--report", str(report), "-q"])
    assert code == 0 and report.is_file()
    dom = run_chromium(chromium, tmp_path, report.resolve().as_uri(), "--dump-dom").stdout
    assert "products.csv" in dom
    tags = re.findall(r'<td class="[^"]*flag m-([a-z]+)[^"]*"[^>]*title="([^"]*)"', dom)
    assert {m for m, _ in tags} == {"pattern", "validation"}
    assert any("did you mean" in title and "Nylon" in title for _, title in tags)
    shown = re.findall(r'<td class="rowno">(\d+)</td>', dom)
    assert shown == ["3000", "3001"]  # only the rows with findings were read back and embedded
