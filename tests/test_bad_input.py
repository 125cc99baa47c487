"""Bad input fails loudly, names the file and line, and leaves nothing half-written."""

import gzip
import json
from pathlib import Path

import pytest
import yaml

from latentrec.cli import main
from latentrec.data.amazon import read_reviews
from latentrec.errors import InputError
from tests.conftest import write_jsonl_gz

ROOT = Path(__file__).resolve().parents[1]


def _good_reviews(n=30):
    return [{"reviewerID": f"U{i % 6}", "asin": f"I{i % 5}", "overall": 4.0, "unixReviewTime": 1520000000 + i}
            for i in range(n)]


def _run_process(tmp_path, reviews, meta):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["process", "--reviews", str(reviews), "--meta", str(meta), "--category", "X",
              "--cfg", json.dumps({"min_items": 1}), "--out", str(out)])
    assert exc.value.code == 2
    assert not out.exists() or not any(out.rglob("*")), "a failed run left files behind"


def _meta(tmp_path):
    return write_jsonl_gz(tmp_path / "meta.json.gz", [{"asin": f"I{i}", "title": f"Title {i}"} for i in range(5)])


def test_truncated_gzip(tmp_path, capsys):
    path = write_jsonl_gz(tmp_path / "r.json.gz", _good_reviews(3000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"r\.json\.gz:\d+: the gzip stream is truncated"):
        read_reviews(path)
    _run_process(tmp_path, path, _meta(tmp_path))
    assert "truncated" in capsys.readouterr().err


def test_malformed_json_line_names_line(tmp_path):
    path = tmp_path / "r.json.gz"
    lines = [json.dumps(r) for r in _good_reviews(5)]
    lines[2] = lines[2][:-5]  # cut the closing of line 3
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"r\.json\.gz:3: malformed JSON"):
        read_reviews(path)
    _run_process(tmp_path, path, _meta(tmp_path))


def test_missing_field_names_field_and_line(tmp_path):
    recs = _good_reviews(5)
    del recs[3]["overall"]
    path = write_jsonl_gz(tmp_path / "r.json.gz", recs)
    with pytest.raises(InputError, match=r"r\.json\.gz:4: review record lacks field\(s\) \['overall'\]"):
        read_reviews(path)


def test_empty_after_filtering(tmp_path, capsys):
    # Every review is far outside the window: nothing survives, whatever the back-off.
    recs = [dict(r, unixReviewTime=1600000000000) for r in _good_reviews()]
    path = write_jsonl_gz(tmp_path / "r.json.gz", recs)
    _run_process(tmp_path, path, _meta(tmp_path))
    err = capsys.readouterr().err
    assert "no item survives" in err and "r.json.gz" in err


def test_missing_file(tmp_path, capsys):
    _run_process(tmp_path, tmp_path / "absent.json.gz", _meta(tmp_path))
    assert "absent.json.gz" in capsys.readouterr().err


def test_config_key_of_wrong_type_is_rejected_by_schema():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(dict(config), str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))  # the default is valid
    config["processing"]["k_core"] = "five"
    with pytest.raises(WorkflowError, match="k_core"):
        validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))


def test_semantic_config_errors():
    from latentrec.config import validate_config

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate_config(config)
    config["run_methods"] = ["NoSuchMethod"]
    with pytest.raises(InputError, match="NoSuchMethod"):
        validate_config(config)


def test_method_seeds_and_init_seed_are_checked():
    from latentrec.config import validate_config

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["methods"]["BIGRec"]["seeds"] = [0, 3]          # 3 is not a seed of the run
    with pytest.raises(InputError, match=r"methods\.BIGRec\.seeds.*\[3\]"):
        validate_config(config)
    del config["methods"]["BIGRec"]["seeds"]
    config["llm"]["latent"]["LatentR3"]["init_seed"] = 0  # without init: sft it would be ignored
    with pytest.raises(InputError, match="init_seed"):
        validate_config(config)
    config["llm"]["latent"]["LatentR3"]["init"] = "sft"
    validate_config(config)


def test_bad_info_file_names_line(tmp_path):
    from latentrec.data.processed_io import read_info

    p = tmp_path / "info.txt"
    p.write_text("Good title\t0\nno tab here\n")
    with pytest.raises(InputError, match=r"info\.txt:2"):
        read_info(p)
