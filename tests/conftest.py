import gzip
import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
CDS_SPLIT = SHARED / "data" / "amazon2018" / "CDs_and_Vinyl_5_2015-10-2018-11"
BEAUTY_RAW = SHARED / "data" / "raw_samples" / "All_Beauty_5.json.gz"


def write_jsonl_gz(path: Path, records) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return path


@pytest.fixture
def requires_cds():
    if not CDS_SPLIT.exists():
        pytest.skip(f"{CDS_SPLIT} is absent (the shared real-data folder is not on this machine)")
    return CDS_SPLIT


@pytest.fixture
def requires_beauty():
    if not BEAUTY_RAW.exists():
        pytest.skip(f"{BEAUTY_RAW} is absent (the shared real-data folder is not on this machine)")
    return BEAUTY_RAW
