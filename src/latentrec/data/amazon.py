"""Streaming parse of the Amazon Review Data 2018 files (gzip or plain JSON lines).

Only the fields the pipeline uses are kept (REFERENCE.md §1.1), as compact columns, so memory grows
with the number of reviews times four small fields, not with the size of the review texts.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentrec.errors import InputError
from latentrec.io_utils import progress

REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime", "overall")


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_json_lines(path: str | os.PathLike, desc: str | None = None):
    """Yield (line_number, record) for every non-empty line; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    lineno = 0
    try:
        with _open(path) as fh:
            for lineno, line in enumerate(progress(fh, desc=desc or path.name, unit=" lines"), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(
                        f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno}); "
                        "the file is damaged: delete it and download it again"
                    ) from None
                if not isinstance(rec, dict):
                    raise InputError(f"{path}:{lineno}: expected a JSON object per line, got {type(rec).__name__}")
                yield lineno, rec
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(
            f"{path}:{lineno + 1}: the gzip stream is truncated or corrupt ({err}); "
            "delete the file and download it again"
        ) from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}:{lineno + 1}: not UTF-8 text ({err.reason})") from None


@dataclass
class Reviews:
    """Review columns in file order."""

    user: np.ndarray  # object array of reviewerID strings
    asin: np.ndarray  # object array of asin strings
    timestamp: np.ndarray  # int64 unixReviewTime
    rating: np.ndarray  # float64 overall

    def __len__(self) -> int:
        return len(self.timestamp)


def read_reviews(path: str | os.PathLike) -> Reviews:
    users, asins, stamps, ratings = [], [], [], []
    intern = {}  # reviewer ids and asins repeat; keep one string object per distinct value
    for lineno, rec in iter_json_lines(path, desc="reviews"):
        missing = [f for f in REVIEW_FIELDS if f not in rec]
        if missing:
            raise InputError(
                f"{path}:{lineno}: review record lacks field(s) {missing}; "
                f"every review needs {list(REVIEW_FIELDS)}"
            )
        try:
            ts = int(rec["unixReviewTime"])
            rating = float(rec["overall"])
        except (TypeError, ValueError):
            raise InputError(
                f"{path}:{lineno}: unixReviewTime must be an integer and overall a number, "
                f"got {rec['unixReviewTime']!r} and {rec['overall']!r}"
            ) from None
        u, a = str(rec["reviewerID"]), str(rec["asin"])
        users.append(intern.setdefault(u, u))
        asins.append(intern.setdefault(a, a))
        stamps.append(ts)
        ratings.append(rating)
    return Reviews(
        user=np.array(users, dtype=object),
        asin=np.array(asins, dtype=object),
        timestamp=np.array(stamps, dtype=np.int64),
        rating=np.array(ratings, dtype=np.float64),
    )


def read_meta_titles(path: str | os.PathLike) -> list[tuple[str, str | None]]:
    """(asin, raw title or None when the record has no title) for every meta line, in file order."""
    out = []
    for lineno, rec in iter_json_lines(path, desc="meta"):
        if "asin" not in rec:
            raise InputError(f"{path}:{lineno}: meta record lacks field 'asin'")
        title = rec.get("title")
        out.append((str(rec["asin"]), None if title is None else str(title)))
    return out
