"""File names of a processed split in the reference format (kept light: the workflow imports it)."""

from __future__ import annotations

import os

INFO_FILE = "info.txt"
SPLIT_FILES = (INFO_FILE, "train.csv", "valid.csv", "test.csv")


def split_input_files(folder: str | os.PathLike) -> list[str]:
    """The split's files as a rule's inputs, so that editing one (say test.csv) re-runs the import.

    Each file may be gzipped; a file absent in both forms is listed plain, so Snakemake reports it
    missing, and one present in both forms is listed twice, so the import names the clash.
    """
    files = []
    for name in SPLIT_FILES:
        plain = os.path.join(folder, name)
        found = [p for p in (plain, plain + ".gz") if os.path.exists(p)]
        files += found or [plain]
    return files
