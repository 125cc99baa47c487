"""The table of rule resources: one entry per rule of the workflow, asked for by the rule's own name,
and the numbers its models give."""

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from latentrec.rule_resources import (
    RULES,
    launcher,
    mem_mb,
    requested_minutes,
    runtime_minutes,
)

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
_RULE = re.compile(r"^( *)rule (\w+):\n", re.M)


def workflow_rules() -> dict[str, str]:
    """{rule name: its body} of every rule in the Snakefile and the rule files, conditional ones included."""
    rules = {}
    for path in RULE_FILES:
        text = path.read_text()
        heads = list(_RULE.finditer(text))
        for head in heads:
            indent = len(head.group(1))
            end = re.compile(rf"^ {{0,{indent}}}\S", re.M).search(text, head.end())
            assert head.group(2) not in rules, f"rule {head.group(2)} is defined twice"
            rules[head.group(2)] = text[head.end() : end.start() if end else len(text)]
    return rules


def test_every_rule_has_a_table_entry_and_every_entry_is_a_rule():
    rules = workflow_rules()
    assert len(rules) > 20
    assert sorted(set(rules) - set(RULES)) == [], "rules without an entry in rule_resources.RULES"
    assert sorted(set(RULES) - set(rules)) == [], "RULES entries that name no rule"


@pytest.mark.parametrize("name", sorted(RULES))
def test_each_rule_asks_for_what_its_entry_says(name):
    body, entry = workflow_rules()[name], RULES[name]
    asks = set(re.findall(r"\b(job_mem_mb|job_runtime|job_gpus|gpu_nodes|launcher)\(\"(\w+)\"\)", body))
    assert {n for _, n in asks} <= {name}, f"rule {name} asks for another rule's resources: {sorted(asks)}"
    helpers = {h for h, _ in asks}
    assert ("localrule: True" in body) == entry.local
    if entry.local:
        assert not helpers and "resources:" not in body
    elif entry.gpus:
        assert helpers == {"job_mem_mb", "job_runtime", "job_gpus", "gpu_nodes", "launcher"}
        assert f'gpu=job_gpus("{name}")' in body and f'nodes=gpu_nodes("{name}")' in body
    else:
        assert helpers == {"job_mem_mb", "job_runtime"}


def test_the_costed_rules_are_the_gpu_rules():
    """`latentrec plan` costs exactly the rules that get GPUs: a GPU rule without a FLOP count would cost 0."""
    assert {n for n, r in RULES.items() if r.cost} == {n for n, r in RULES.items() if r.gpus}


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_cpu_models_read_the_inputs(tmp_path, config):
    raw = tmp_path / "reviews.json.gz"
    raw.write_bytes(b"x" * 10 * 2**20)  # 10 MB
    assert mem_mb("process_raw_dataset", config, {}, [str(raw)]) == 800 + 16 * 10
    assert runtime_minutes("process_raw_dataset", config, {}, [str(raw)]) == int(10 + 2 * 30 / 60)
    assert runtime_minutes("process_raw_dataset", config, {}, [str(raw)], attempt=2) == int(2 * (10 + 1))
    assert mem_mb("download_amazon2018", config, {}, []) == 1_000
    assert runtime_minutes("download_amazon2018", config, {}, []) == 240
    assert (mem_mb("fetch_model", config, {}, []), runtime_minutes("fetch_model", config, {}, [])) == (4_000, 60)

    train = tmp_path / "train.parquet"
    pd.DataFrame({"x": range(4_000)}).to_parquet(train)
    method = next(m for m, c in config["methods"].items() if c["family"] == "mostpop")
    w = {"dataset": "d", "method": method, "seed": "0"}
    assert runtime_minutes("fit_predict_recommender", config, w, [str(train)]) == int(10 + 2 * 4_000 * 5e-4 / 60)


def test_llm_jobs_scale_with_the_configs_gpus(config):
    config["llm"].update(sft_gpus=2, decode_gpus=2)
    assert mem_mb("sft_backbone", config, {}, []) == 8_000 * 2 + 8_000
    assert mem_mb("decode_llm_shard", config, {}, [], attempt=2) == 24_000
    assert launcher("sft_backbone", config).endswith("accelerate launch --multi_gpu --num_processes 2 -m latentrec")
    assert launcher("decode_llm_shard", config) == "python -m latentrec lease-gpus 2 -- python -m latentrec"
    config["llm"].update(sft_gpus=0)
    assert launcher("sft_backbone", config) == "python -m latentrec"
    # the runtime request is the FLOP count's for the job's rows (10k per split before the tables exist)
    rows = {"train": 10_000, "valid": 10_000, "test": 10_000}
    assert runtime_minutes("sft_backbone", config, {"dataset": "d", "seed": "0"}, []) == requested_minutes(
        "sft_backbone", {"dataset": "d", "seed": "0"}, config, rows, 10_000, 0
    )
