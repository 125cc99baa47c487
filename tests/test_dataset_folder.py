"""A processed dataset whose `folder` is wrong stops the run before the first job.

Otherwise Snakemake drops the import (its input is missing), keeps the previous dataset's tables as
"present and up to date" and exits 0: wrong results that look current.
"""

import os

import pytest
import yaml

from latentrec.config_checks import validate_config, validate_schema
from latentrec.errors import InputError
from tests.test_config_errors import SCHEMA, complete_split, merged
from tests.test_workflow import snakemake


def processed_overlay(folder) -> dict:
    return {
        "datasets": {"Typo": {"source": "processed", "domain": "CDs", "folder": str(folder)}},
        "run_datasets": ["Typo"],
    }


def bad_folders(tmp_path):
    a_file = tmp_path / "a_file.csv"
    a_file.write_text("x\n")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    half = tmp_path / "half"
    half.mkdir()
    (half / "info.txt").write_text("x\n")
    (half / "train.csv.gz").write_bytes(b"")
    return {
        "missing": (tmp_path / "nowhere", "does not exist"),
        "etc": ("/etc", "lacks info.txt, train.csv, valid.csv, test.csv"),
        "file": (a_file, "is a file; it must be a folder"),
        "symlink_loop": (loop, "does not exist (or is a broken link)"),
        "half": (half, "lacks valid.csv, test.csv"),
    }


@pytest.mark.parametrize("case", ["missing", "etc", "file", "symlink_loop", "half"])
def test_wrong_folder_is_refused_naming_the_key(tmp_path, case):
    folder, text = bad_folders(tmp_path)[case]
    cfg = merged(processed_overlay(folder))
    validate_schema(cfg, SCHEMA)
    with pytest.raises(InputError) as err:
        validate_config(cfg)
    msg = str(err.value)
    assert msg.startswith("config: datasets.Typo.folder: "), msg
    assert text in msg, msg
    if case != "file":
        assert "copy the processed split" in msg and "source: raw" in msg, msg


def test_complete_folder_passes(tmp_path):
    cfg = merged(processed_overlay(complete_split(tmp_path / "ok")))
    validate_schema(cfg, SCHEMA)
    validate_config(cfg)


def test_typo_folder_does_not_report_nothing_to_be_done(tmp_path):
    """End to end: `snakemake --configfile typo.yaml` fails before the DAG, it does not exit 0."""
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(processed_overlay(tmp_path / "nowhere")))
    out = snakemake("-n", "--configfile", str(typo), check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "Nothing to be done" not in text
    assert "datasets.Typo.folder" in text and "does not exist" in text, text
