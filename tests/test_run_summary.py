"""The end-of-run summary: wall time per rule from Snakemake benchmark TSVs, and the run's outputs."""

from pathlib import Path

import pytest

from latentrec.run_summary import format_summary, rule_times, run_summary

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(path: Path, *rows: tuple[float, str]) -> None:
    """A benchmark file as Snakemake 9 writes it: one row per repeat (seconds, max_rss)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"{s}\t0:00:{int(s):02d}\t{rss}\t1451.47\t80.47\t90.73\t0.19\t2.56\t28.74\t0.96\n" for s, rss in rows
    )
    path.write_text(HEADER + body)


def test_times_are_summed_per_rule_with_count_longest_and_peak(tmp_path):
    b = tmp_path / "benchmarks"
    bench(b / "sft_backbone" / "Synthetic_Music" / "seed0.tsv", (100.6, "3400.1"))
    bench(b / "sft_backbone" / "Synthetic_Music" / "seed1.tsv", (50.0, "5200.0"))
    bench(b / "decode_llm_shard" / "Synthetic_Music" / "Base" / "seed0" / "1-of-2.tsv", (10.0, "NA"))
    bench(b / "fit_predict_recommender" / "D" / "SASRec" / "seed0.tsv", (4.0, "100"), (6.0, "120"))  # 2 repeats
    bench(b / "significance_tests.tsv", (1.0, "90"))  # a rule without wildcards
    t = rule_times(b)
    assert set(t) == {"sft_backbone", "decode_llm_shard", "fit_predict_recommender", "significance_tests"}
    assert (t["sft_backbone"].jobs, t["sft_backbone"].total_s) == (2, 150.6)
    assert t["sft_backbone"].max_s == 100.6 and t["sft_backbone"].peak_rss_mb == 5200.0
    assert t["decode_llm_shard"].peak_rss_mb is None  # NA is not a number
    assert (t["fit_predict_recommender"].jobs, t["fit_predict_recommender"].total_s) == (1, 5.0)  # mean of repeats
    assert t["fit_predict_recommender"].peak_rss_mb == 120.0

    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    for name in ("table1.md", "table1.csv", "table1_ndcg10.png", "flr_fig9_inference_time.png"):
        (tables / name).write_text("x")
    text = run_summary(b, tables, out=b / "summary.md")
    assert (b / "summary.md").read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "rule" not in line]
    assert rows[0] == "| sft_backbone | 2 | 0:02:31 | 0:01:41 | 5200 |"  # longest total first
    assert rows[-1] == "| all (job time, not elapsed) | 5 | 0:02:47 | | |"
    tables_part, figures_part = text.split("## Tables")[1].split("## Figures")
    assert f"- {tables / 'table1.md'}" in tables_part and "png" not in tables_part
    assert (
        f"- {tables / 'table1_ndcg10.png'}" in figures_part
        and f"- {tables / 'flr_fig9_inference_time.png'}" in figures_part
    )


def test_no_benchmarks_and_no_outputs_still_summarise(tmp_path):
    text = run_summary(tmp_path / "absent", tmp_path / "absent_tables")
    assert "| all (job time, not elapsed) | 0 | 0:00:00 | | |" in text and text.count("- none") == 2


def test_a_file_that_is_not_a_benchmark_is_named(tmp_path):
    bad = tmp_path / "b" / "rule_x" / "w.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("wall\n3\n")
    with pytest.raises(ValueError, match=r"rule_x/w\.tsv.*not a Snakemake benchmark"):
        rule_times(tmp_path / "b")


def test_summary_reads_a_real_snakemake_benchmark(tmp_path):
    """A benchmark written by Snakemake itself (its header may change between versions)."""
    import subprocess
    import sys

    (tmp_path / "Snakefile").write_text(
        'rule a:\n    output: "x"\n    benchmark: "benchmarks/a/w1.tsv"\n    shell: "sleep 0.2; touch {output}"\n'
    )
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "-q"], cwd=tmp_path, check=True, capture_output=True
    )
    t = rule_times(tmp_path / "benchmarks")
    assert t["a"].jobs == 1 and 0.1 < t["a"].total_s < 30
    assert format_summary(t, tmp_path).count("| a | 1 |") == 1


def test_a_figure_the_config_leaves_out_is_named_with_why(tmp_path):
    why = "latentr3_fig4_grpo (LatentR3 Figure 4): this config runs no original GRPO"
    text = run_summary(tmp_path / "absent", tmp_path / "absent_tables", not_drawn=[why])
    assert text.endswith(f"## Not drawn by this config\n\n- {why}\n")
    assert "Not drawn" not in run_summary(tmp_path / "absent", tmp_path / "absent_tables")
