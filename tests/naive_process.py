"""A deliberately plain re-statement of the reference data processing (REFERENCE.md §1), for tests.

Loops and dicts only, following the specification step by step; the vectorised implementation in
latentrec.data must produce the same CSV files. Written from the specification, not from the
reference code.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo


def _lines(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _ts(y, m, tz):
    return datetime(y, m, 1, tzinfo=ZoneInfo(tz)).timestamp()


def naive_process(
    reviews_path,
    meta_path,
    out_dir,
    *,
    K=5,
    st=(2017, 10),
    ed=(2018, 11),
    step_months=3,
    min_items=5000,
    tz="UTC",
    category="X",
):
    reviews = _lines(reviews_path)
    metas = _lines(meta_path)
    st_year, st_month = st
    while True:
        result = _attempt(reviews, metas, K, st_year, st_month, ed, min_items, tz)
        if result is not None:
            break
        st_month -= step_months
        while st_month <= 0:
            st_month += 12
            st_year -= 1
    id_title, kept, items, name_window = result
    random.seed(42)
    random.shuffle(items)
    item2id = {a: i for i, a in enumerate(items)}

    with open(f"{out_dir}/info.txt", "w", encoding="utf-8", newline="") as fh:
        for a in items:
            fh.write(f"{id_title[a]}\t{item2id[a]}\n")

    per_user = {}
    for r in kept:
        per_user.setdefault(r["reviewerID"], []).append((r["asin"], r["overall"], int(r["unixReviewTime"])))
    rows = []
    for user, seq in per_user.items():
        seq = sorted(seq, key=lambda x: x[2])
        for i in range(1, len(seq)):
            h = seq[max(0, i - 10) : i]
            a, rating, t = seq[i]
            rows.append(
                [
                    user,
                    str([x[0] for x in h]),
                    a,
                    str([item2id[x[0]] for x in h]),
                    item2id[a],
                    str([id_title[x[0]] for x in h]),
                    id_title[a],
                    str([x[1] for x in h]),
                    rating,
                    str([x[2] for x in h]),
                    t,
                ]
            )
    rows = sorted(rows, key=lambda x: int(x[-1]))
    n = len(rows)
    parts = {"train": rows[: int(n * 0.8)], "valid": rows[int(n * 0.8) : int(n * 0.9)], "test": rows[int(n * 0.9) :]}
    header = [
        "user_id",
        "item_asins",
        "item_asin",
        "history_item_id",
        "item_id",
        "history_item_title",
        "item_title",
        "history_rating",
        "rating",
        "history_timestamp",
        "timestamp",
    ]
    for name, part in parts.items():
        with open(f"{out_dir}/{name}.csv", "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(part)
    return f"{category}_{K}_{name_window}"


def _attempt(reviews, metas, K, st_year, st_month, ed, min_items, tz):
    start, end = _ts(st_year, st_month, tz), _ts(ed[0], ed[1], tz)
    remove_items, remove_users = set(), set()
    id_title = {}
    for m in metas:
        if "title" not in m or "<span id" in m["title"]:
            remove_items.add(m["asin"])
            continue
        t = m["title"].replace("&quot;", '"').replace("&amp;", "&").strip(" ").strip('"')
        if len(t) > 1 and len(t.split(" ")) <= 20:
            id_title[m["asin"]] = t
        else:
            remove_items.add(m["asin"])
    for r in reviews:
        if r["asin"] not in id_title:
            remove_items.add(r["asin"])
    while True:
        users, items = defaultdict(int), {}
        for r in reviews:
            if not (start <= int(r["unixReviewTime"]) <= end):
                continue
            if r["reviewerID"] in remove_users or r["asin"] in remove_items:
                continue
            users[r["reviewerID"]] += 1
            items[r["asin"]] = items.get(r["asin"], 0) + 1
        flag = False
        for u, c in users.items():
            if c < K:
                remove_users.add(u)
                flag = True
        for i, c in items.items():
            if c < K:
                remove_items.add(i)
                flag = True
        if st_year > 1996 and len(items) < min_items:
            break
        if not flag:
            break
    if len(items) < min_items and st_year >= 1996:
        return None
    kept = [
        r
        for r in reviews
        if start <= int(r["unixReviewTime"]) <= end
        and r["reviewerID"] not in remove_users
        and r["asin"] not in remove_items
    ]
    return id_title, kept, list(items), f"{st_year}-{st_month}-{ed[0]}-{ed[1]}"
