"""Title filter, time window with back-off, iterated strict k-core and item-id assignment.

Default behaviour reproduces the reference process.py (docs/reference_code.md §1.2-1.4) exactly, with window
bounds computed in a configurable time zone (UTC by default; the reference used the machine's local
zone, "Asia/Shanghai" for the authors). `title_cleaning: strict` additionally unescapes every HTML
entity, drops titles with HTML markup, collapses whitespace and makes duplicate titles unique.
"""

from __future__ import annotations

import html
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from latentrec.data.amazon import Reviews
from latentrec.errors import InputError
from latentrec.io_utils import progress


@dataclass
class FilterConfig:
    k_core: int = 5
    window_start: str = "2017-10"  # YYYY-MM, inclusive lower bound at 00:00 of the 1st
    window_end: str = "2018-11"  # YYYY-MM, inclusive upper bound at 00:00 of the 1st
    backoff_months: int = 3  # reference R3: 3 months; D3: 12
    min_items: int = 5000  # reference R3: 5000; D3: 10000
    min_start_year: int = 1996  # back-off stops once the start year reaches this
    timezone: str = "UTC"
    title_cleaning: str = "reference"  # reference | strict
    max_title_words: int = 20
    item_id_seed: int = 42

    @classmethod
    def from_dict(cls, d: dict) -> "FilterConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        cfg = cls(**known)
        if cfg.title_cleaning not in ("reference", "strict"):
            raise InputError(f"processing.title_cleaning must be 'reference' or 'strict', got {cfg.title_cleaning!r}")
        return cfg


# ----------------------------------------------------------------------------- titles

_TAG = re.compile(r"<[a-zA-Z/][^>]*>?")


# A tab, line break or other control character, with the whitespace around it. The reference keeps
# them, and a title with one breaks its info file (one `title<TAB>id` line per item, read back with
# split('\t')[0]); both modes replace each such run by one space. Other titles are left unchanged.
_CONTROL_RUN = re.compile(r"\s*[\x00-\x1f\x7f\x85\u2028\u2029][\s\x00-\x1f\x7f]*")


def _one_line(raw: str) -> str:
    return _CONTROL_RUN.sub(" ", raw) if _CONTROL_RUN.search(raw) else raw


def clean_title_reference(raw: str) -> str:
    """The reference normalisation, in its order: two entities, then strip spaces, then quotes.

    Before it, tabs, line breaks and other control characters become spaces (see _CONTROL_RUN).
    """
    return _one_line(raw).replace("&quot;", '"').replace("&amp;", "&").strip(" ").strip('"')


def clean_title_strict(raw: str) -> str | None:
    """Full HTML unescape, whitespace and control characters collapsed; None for markup fragments."""
    text = _one_line(html.unescape(html.unescape(raw)))  # some dumps are double-escaped (&amp;quot;)
    if _TAG.search(text):
        return None
    return " ".join(text.split()).strip('"').strip()


def select_titles(meta: list[tuple[str, str | None]], cfg: FilterConfig) -> tuple[dict[str, str], set[str]]:
    """Return (asin -> title kept, asins removed), following docs/reference_code.md §1.2."""
    titles: dict[str, str] = {}
    removed: set[str] = set()
    for asin, raw in meta:
        if raw is None or "<span id" in raw:
            removed.add(asin)
            continue
        if cfg.title_cleaning == "strict":
            title = clean_title_strict(raw)
            if title is None:
                removed.add(asin)
                continue
        else:
            title = clean_title_reference(raw)
        if len(title) > 1 and len(title.split(" ")) <= cfg.max_title_words:
            titles[asin] = title  # a later meta line for the same asin overwrites an earlier one
        else:
            removed.add(asin)
    return titles, removed


def make_titles_unique(titles: dict[str, str], asins: list[str]) -> dict[str, str]:
    """Strict mode: a title shared by several kept items gets its asin appended, e.g. 'Greatest Hits [B0001]'.

    Generative recommenders decode titles, so two items with one title cannot be told apart.
    """
    counts = Counter(titles[a] for a in asins)
    return {a: (f"{titles[a]} [{a}]" if counts[titles[a]] > 1 else titles[a]) for a in asins}


# ----------------------------------------------------------------------------- window + k-core


def month_start_ts(year: int, month: int, tz: str) -> int:
    return int(datetime(year, month, 1, tzinfo=ZoneInfo(tz)).timestamp())


def _parse_ym(text: str) -> tuple[int, int]:
    try:
        y, m = (int(p) for p in str(text).split("-"))
        if not 1 <= m <= 12:
            raise ValueError
        return y, m
    except ValueError:
        raise InputError(f"window bound {text!r} must be 'YYYY-MM'") from None


def step_back(year: int, month: int, months: int) -> tuple[int, int]:
    """Move a month start back. For 3 months this matches the reference's m-3 / m+9 rule."""
    total = year * 12 + (month - 1) - months
    return total // 12, total % 12 + 1


@dataclass
class FilterResult:
    mask: np.ndarray  # reviews kept (in window, strict k-core, titled)
    item_order: list[str]  # asins in order of first appearance among kept reviews
    window: tuple[str, str]  # 'YYYY-M' labels as in the reference file names
    passes: list[dict] = field(default_factory=list)  # per-attempt log for the stats table


def kcore_with_backoff(reviews: Reviews, titled: set[str], removed_items: set[str], cfg: FilterConfig) -> FilterResult:
    """Iterated strict k-core inside the window; move the start back until min_items items survive.

    Vectorised over integer codes; each pass has the reference semantics: counts over the reviews that
    are in the window and not yet removed (duplicates count), users and items below k removed in the
    same pass, and an early stop when the pass's distinct-item count is already below the threshold.
    """
    user_codes, users = pd.factorize(reviews.user)
    item_codes, items = pd.factorize(reviews.asin)
    item_ok = np.array([(a in titled) and (a not in removed_items) for a in items], dtype=bool)
    end_y, end_m = _parse_ym(cfg.window_end)
    st_y, st_m = _parse_ym(cfg.window_start)
    end_ts = month_start_ts(end_y, end_m, cfg.timezone)
    log = []
    bar = progress(desc="window back-off", unit=" window")
    while True:
        start_ts = month_start_ts(st_y, st_m, cfg.timezone)
        in_window = (reviews.timestamp >= start_ts) & (reviews.timestamp <= end_ts) & item_ok[item_codes]
        user_gone = np.zeros(len(users), dtype=bool)
        item_gone = np.zeros(len(items), dtype=bool)
        n_passes = 0
        while True:
            n_passes += 1
            keep = in_window & ~user_gone[user_codes] & ~item_gone[item_codes]
            u_cnt = np.bincount(user_codes[keep], minlength=len(users))
            i_cnt = np.bincount(item_codes[keep], minlength=len(items))
            n_items_pass = int((i_cnt > 0).sum())
            new_u = (u_cnt > 0) & (u_cnt < cfg.k_core)
            new_i = (i_cnt > 0) & (i_cnt < cfg.k_core)
            changed = bool(new_u.any() or new_i.any())
            user_gone |= new_u
            item_gone |= new_i
            if st_y > cfg.min_start_year and n_items_pass < cfg.min_items:
                break
            if not changed:
                break
        log.append({"start": f"{st_y}-{st_m}", "end": f"{end_y}-{end_m}", "passes": n_passes, "items": n_items_pass})
        bar.update(1)
        if n_items_pass >= cfg.min_items:
            break
        if st_y < cfg.min_start_year or step_back(st_y, st_m, cfg.backoff_months)[0] < 1:
            # The reference returned this window anyway, short of min_items; we stop with a clear error.
            bar.close()
            raise InputError(
                f"processing.min_items: {n_items_pass} items survive the {cfg.k_core}-core even with the window "
                f"starting at {st_y}-{st_m} (the back-off stops at processing.min_start_year {cfg.min_start_year}), "
                f"fewer than min_items {cfg.min_items}; lower min_items (or min_start_year)"
            )
        st_y, st_m = step_back(st_y, st_m, cfg.backoff_months)
    bar.close()
    # `keep` is the last pass's selection: with no removal in that pass it is the converged k-core.
    first_seen = pd.unique(item_codes[keep])
    return FilterResult(
        mask=keep,
        item_order=[items[c] for c in first_seen],
        window=(f"{st_y}-{st_m}", f"{end_y}-{end_m}"),
        passes=log,
    )


def assign_item_ids(item_order: list[str], seed: int) -> dict[str, int]:
    """The reference's ids: Python's Mersenne Twister shuffle of first-appearance order, seed 42."""
    shuffled = list(item_order)
    random.Random(seed).shuffle(shuffled)
    return {asin: i for i, asin in enumerate(shuffled)}
