"""What the report prints cannot change its structure: a hostile display name or label stays text in the Markdown,
LaTeX and CSV tables, and in the rule params that `snakemake --report` embeds inside a <script>."""

import csv
import json

import pandas as pd
import yaml

from latentrec.report.escape import csv_cell, json_for_html, md_cell, tex
from latentrec.report.flr import grid_markdown
from latentrec.report.latentr3 import ablation_markdown
from latentrec.report.tables import collect, to_latex, to_markdown, write_csv
from tests.test_workflow import snakemake

PIPE = "A | B <img src=x onerror=alert(1)> & </script>"
TEX = r"\input{/etc/passwd} & 100% $x$ #1 a_b ~ ^ {}"
FORMULA = '=HYPERLINK("http://evil","x")'
METRICS = {k: 0.1 for k in ("HR@5", "HR@10", "NDCG@5", "NDCG@10")}
METRICS.update({f"title_{k}": v for k, v in list(METRICS.items())})


def _long(method):
    return collect([{"dataset": "Synthetic_Music", "method": method, "seed": 0, "metrics": METRICS}], {}, {})


def _table_rows(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("|")]


def _columns(line: str) -> int:
    """Cells of a GFM table row: `|` splits, `\\|` (an odd run of backslashes before it) does not."""
    n, escaped = 0, False
    for ch in line.strip().strip("|"):
        if ch == "|" and not escaped:
            n += 1
        escaped = ch == "\\" and not escaped
    return n + 1


def test_markdown_cell_keeps_its_column_and_no_html():
    md = to_markdown(_long(PIPE), "T <b>x</b>")
    rows = _table_rows(md)
    assert len({_columns(r) for r in rows}) == 1, rows
    assert "<img" not in md and "</script>" not in md and "<b>" not in md
    assert "A \\| B &lt;img src=x onerror=alert(1)&gt; &amp; &lt;/script&gt;" in md
    # a backslash before the pipe cannot un-escape it
    assert _columns(md_cell("a\\|b") + " | x") == 2


def test_other_markdown_writers_escape_labels():
    a = pd.DataFrame(
        [
            {
                "dataset": "D",
                "variant": PIPE,
                "method": "M",
                "metric": "N@10",
                "title_mean": 0.1,
                "title_std": 0.0,
                "paper": None,
                "id_mean": 0.1,
                "id_std": 0.0,
            }
        ]
    )
    g = pd.DataFrame(
        [
            {
                "dataset": "D",
                "column": PIPE,
                "method": "M",
                "metric": "N@10",
                "title_mean": 0.1,
                "title_std": 0.0,
                "paper": None,
                "id_mean": 0.1,
                "id_std": 0.0,
            }
        ]
    )
    for md in (ablation_markdown(a, "note"), grid_markdown(g, "T", "dataset", "column", "note")):
        rows = _table_rows(md)
        assert len({_columns(r) for r in rows}) == 1, rows
        assert "<img" not in md and "</script>" not in md


def test_latex_prints_specials_and_runs_nothing():
    out = to_latex(_long(TEX))
    assert r"\input{" not in out
    assert (
        r"\textbackslash{}input\{/etc/passwd\} \& 100\% \$x\$ \#1 a\_b \textasciitilde{} \textasciicircum{} "
        r"\{\}"
    ) in out
    # the method row has as many & separators as the metric header row
    head2, row = [line for line in out.splitlines() if line.startswith(("Method", r"\textbackslash"))]
    assert row.replace(r"\&", "").count("&") == head2.count("&") == 4
    assert tex("a_b") == r"a\_b"


def test_csv_neutralises_formulas_not_numbers(tmp_path):
    df = pd.DataFrame({"method": [FORMULA, "+cmd", "@SUM(A1)", "-x", "-0.12", "ok"], "value": [-0.12, 1, 2, 3, 4, 5]})
    write_csv(df, tmp_path / "t.csv")
    rows = list(csv.reader(open(tmp_path / "t.csv", newline="")))
    assert [r[0] for r in rows[1:]] == ["'" + FORMULA, "'+cmd", "'@SUM(A1)", "'-x", "-0.12", "ok"]
    assert rows[1][1] == "-0.12"  # a negative number stays a number
    assert csv_cell(-3) == -3 and csv_cell("+1e-3") == "+1e-3"


def test_params_json_cannot_close_the_report_script():
    obj = {"display_names": {"X": PIPE}}
    s = json_for_html(obj)
    assert "<" not in s and ">" not in s and "&" not in s
    assert json.loads(s) == obj  # the job reads back exactly the config


def test_report_params_in_the_workflow_are_escaped(tmp_path):
    """The report rules' --cfg (the params `snakemake --report` embeds) carries no raw < or >."""
    over = tmp_path / "hostile.yaml"
    over.write_text(
        yaml.safe_dump(
            {
                "methods": {"SASRec": {"display_name": "</script><img src=x onerror=alert(1)>"}},
                "run_methods": ["MostPop", "SASRec"],
            }
        )
    )
    out = snakemake("-n", "-p", "--forceall", "--configfile", str(over))
    line = next(x for x in out.stdout.splitlines() if "latentrec report " in x and "--cfg" in x)
    assert "</script>" not in line and "<img" not in line
    assert "\\u003c/script\\u003e\\u003cimg src=x onerror=alert(1)\\u003e" in line
