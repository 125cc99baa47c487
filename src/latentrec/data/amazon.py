"""Streaming parse of the Amazon Review Data 2018 files (gzip or plain JSON lines).

Only the fields the pipeline uses are kept (REFERENCE.md §1.1), as compact columns, so memory grows
with the number of reviews times four small fields, not with the size of the review texts.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentrec.errors import InputError
from latentrec.io_utils import progress

REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime", "overall")


def _open(path: Path):
    """Binary: lines are split on b"\\n" and decoded one at a time, so an error names the raw line."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_json_lines(path: str | os.PathLike, desc: str | None = None):
    """Yield (line_number, record) for every non-empty line; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    lineno = 0
    try:
        with _open(path) as fh:
            for lineno, raw in enumerate(progress(fh, desc=desc or path.name, unit=" lines"), 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise InputError(
                        f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                        f"{err.start + 1}: {err.reason})"
                    ) from None
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
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InputError(
            f"{path}:{lineno + 1}: the gzip stream is truncated or corrupt ({err}); "
            "delete the file and download it again"
        ) from None
    except OSError as err:
        raise InputError(f"{path}:{lineno + 1}: cannot be read ({err})") from None


@dataclass
class Reviews:
    """Review columns in file order."""

    user: np.ndarray  # object array of reviewerID strings
    asin: np.ndarray  # object array of asin strings
    timestamp: np.ndarray  # int64 unixReviewTime
    rating: np.ndarray  # float64 overall

    def __len__(self) -> int:
        return len(self.timestamp)


_INT64_MAX = 2**63 - 1
_INT = re.compile(r"-?[0-9]{1,19}")


def _review_values(path, lineno: int, rec: dict) -> tuple[str, str, int, float]:
    """reviewerID, asin, unixReviewTime, overall of one review, each checked; errors name file:line."""

    def bad(field, what):
        raise InputError(f"{path}:{lineno}: {field} {rec[field]!r} {what}")

    user, asin, t, r = rec["reviewerID"], rec["asin"], rec["unixReviewTime"], rec["overall"]
    if type(user) is not str or not user:
        bad("reviewerID", "is not a non-empty string")
    if type(asin) is not str or not asin:
        bad("asin", "is not a non-empty string")
    if type(t) is int:
        ts = t
    elif type(t) is float and t.is_integer():  # false for inf and nan
        ts = int(t)
    elif type(t) is str and _INT.fullmatch(t):
        ts = int(t)
    else:
        bad("unixReviewTime", "is not an integer Unix time in seconds")
    if not -_INT64_MAX <= ts <= _INT64_MAX:
        bad("unixReviewTime", "is out of range for a Unix time in seconds")
    try:
        rating = float(r) if type(r) in (int, float, str) else math.nan
    except ValueError:
        rating = math.nan
    if not math.isfinite(rating):
        bad("overall", "is not a finite number")
    return user, asin, ts, rating


def read_reviews(path: str | os.PathLike) -> Reviews:
    users, asins, stamps, ratings = [], [], [], []
    intern = {}  # reviewer ids and asins repeat; keep one string object per distinct value
    for lineno, rec in iter_json_lines(path, desc="reviews"):
        missing = [f for f in REVIEW_FIELDS if f not in rec]
        if missing:
            raise InputError(
                f"{path}:{lineno}: review record lacks field(s) {missing}; every review needs {list(REVIEW_FIELDS)}"
            )
        u, a, ts, rating = rec["reviewerID"], rec["asin"], rec["unixReviewTime"], rec["overall"]
        if not (  # fast path for the usual types; anything else is converted or rejected there
            type(u) is str
            and u
            and type(a) is str
            and a
            and type(ts) is int
            and -_INT64_MAX <= ts <= _INT64_MAX
            and type(rating) is float
            and -math.inf < rating < math.inf
        ):
            u, a, ts, rating = _review_values(path, lineno, rec)
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
        asin, title = rec["asin"], rec.get("title")
        if type(asin) is not str or not asin:
            raise InputError(f"{path}:{lineno}: asin {asin!r} is not a non-empty string")
        if title is not None and type(title) is not str:
            raise InputError(
                f"{path}:{lineno}: title of {asin} is a {type(title).__name__}, not a string: {str(title)[:80]}"
            )
        out.append((asin, title))
    return out
