"""A deterministic SYNTHETIC music category in the raw Amazon Review Data 2018 file formats.

This is the project's embedded default dataset: the default pipeline run reads these two files through
the same raw → window/k-core → split path as a real category, with no download.

  {name}_5.json.gz     one review per line, grouped by asin (asins sorted), 5-core like the real dumps
  meta_{name}.json.gz  one item per line (every catalogue item, reviewed or not)

The generator plants structure that recommenders can learn:
  * tastes:     every user has 1-2 favourite genres and buys ~80% of the time from them;
  * sequels:    artists have discographies (Vol. 1 → Vol. 2 → ..., or albums in release order) and a
                user who bought one album often buys the next one soon after, so a next-item model
                clearly beats MostPop;
  * popularity: Zipf-like within each genre, boosted for the first months after an album's release.
Activity grows over the years so that, with the defaults, the pipeline's 2017-10..2018-11 window
alone keeps fewer than 300 items after a strict 5-core and has to back off to around 2016.

The meta file also carries, at low rates, faults the real meta has (HTML-fragment titles, HTML
entities, missing titles, an over-long title, duplicate titles) so the title filters are exercised.
Same arguments → byte-identical files.
"""

from __future__ import annotations

import calendar
import gzip
import io
import json
import os
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from latentrec.io_utils import atomic_path

# ----------------------------------------------------------------------------- word lists

# (genre, sub-genres); the order is also the size order (earlier genres get more items).
GENRES = [
    ("Rock", ["Classic Rock", "Album-Oriented Rock (AOR)", "Indie & Lo-Fi", "Hard Rock"]),
    ("Pop", ["Adult Contemporary", "Dance Pop", "Singer-Songwriters", "Vocal Pop"]),
    ("Jazz", ["Bebop", "Cool Jazz", "Smooth Jazz", "Vocal Jazz"]),
    ("Country", ["Americana", "Bluegrass", "Honky-Tonk", "Outlaw Country"]),
    ("Classical", ["Chamber Music", "Opera & Vocal", "Symphonies", "Concertos"]),
    ("R&B", ["Soul", "Funk", "Motown", "Contemporary R&B"]),
    ("Dance & Electronic", ["House", "Techno", "Ambient", "Electronica"]),
    ("Folk", ["Contemporary Folk", "Traditional Folk", "Celtic", "Folk Rock"]),
    ("Blues", ["Chicago Blues", "Delta Blues", "Electric Blues", "Acoustic Blues"]),
    ("Metal", ["Heavy Metal", "Thrash & Speed Metal", "Progressive Metal", "Doom Metal"]),
    ("Rap & Hip-Hop", ["East Coast", "West Coast", "Alternative Rap", "Old School"]),
    ("Latin Music", ["Salsa", "Latin Pop", "Tango", "Bossa Nova"]),
]

ADJECTIVES = (
    "Velvet Silver Hollow Crimson Golden Electric Quiet Broken Neon Wild Lonely Burning Paper Glass "
    "Midnight Northern Distant Restless Faded Bright Painted Frozen Honey Iron Blue Scarlet Gentle "
    "Hidden Shallow Lucky Crooked Satin Amber Static Wandering Hungry Sleeping Secret Copper"
).split()
NOUNS = (
    "Harbor River Static Lantern Sparrow Engine Garden Mirror Highway Ocean Letter Shadow Canyon Ember "
    "Orchard Satellite Window Compass Thunder Meadow Signal Anchor Horizon Pilgrim Carousel Prairie "
    "Tide Harvest Comet Chapel Valley Circus Empire Lighthouse Avenue Station Rain Winter Summer Fever"
).split()
COUNT_NOUNS = [n for n in NOUNS if n not in {"Static", "Thunder", "Rain", "Winter", "Summer", "Fever", "Harvest"}]
FIRST_NAMES = (
    "Ella Miles Nina Otis Ruby Hank Billie Louis Aretha Johnny Dolly Ray Etta Marvin Joni Django Patsy "
    "Chet Nora Willie Carole Dexter Lena Wes Mavis Buddy Sam Iris Leon June Frank Alma Clara Felix"
).split()
LAST_NAMES = (
    "Hartley Monroe Calloway Whitaker Delaney Brooks Marlowe Fontaine Sinclair Baxter Holloway Vance "
    "Prescott Garland Lockwood Everett Ramsey Quinn Harlow Mercer Abbott Fairchild Winslow Carver Reyes"
).split()
BAND_SUFFIXES = ["Trio", "Quartet", "Band", "Orchestra", "Ensemble", "Revue", "Collective", "Project"]
VENUES = ["the Fillmore", "Red Rocks", "the Apollo", "Newport", "Montreux", "the Ryman", "Budokan", "the Roxy"]

HTML_FRAGMENT = '<span class="a-size-medium a-color-secondary a-text-normal'
HTML_FRAGMENT_ID = '<span id="productTitle" class="a-size-large">'
DUPLICATE_TITLES = ["Greatest Hits", "Greatest Hits", "Greatest Hits", "Christmas Songs", "Christmas Songs"]

SUMMARIES = {
    5: ["Five Stars", "Great album", "A masterpiece", "Love it", "Excellent CD", "Still one of my favorites"],
    4: ["Four Stars", "Very good", "Solid record", "Good but not their best", "Nice CD"],
    3: ["Three Stars", "OK", "A mixed bag", "Some good tracks", "Not bad"],
    2: ["Two Stars", "Disappointing", "Expected more", "Only a couple of good songs"],
    1: ["One Star", "Awful", "Not what I expected", "Skip this one", "Poor sound quality"],
}
OPENERS = {
    5: [
        "Wonderful album.",
        "I can't stop playing this.",
        "Every track is a keeper.",
        "Brilliant from start to finish.",
    ],
    4: ["A very enjoyable record.", "Good album overall.", "Grew on me after a few listens."],
    3: ["It's fine.", "Some strong songs and some filler.", "Not their best work."],
    2: ["I wanted to like this more.", "Pretty weak compared to their earlier albums."],
    1: ["Very disappointing.", "I returned it.", "The mix is muddy and the songs are forgettable."],
}
DETAILS = [
    "The {g} sound is warm and the production is clean.",
    "If you like {g} you will enjoy this one.",
    "Arrived quickly and well packaged.",
    "The title track alone is worth the price.",
    "Great to hear {a} on CD again.",
    "Bought this after hearing a song on the radio.",
    "The liner notes are a nice touch.",
    "Fans of {a} will not be disappointed.",
]
MONTH_NAMES = list(calendar.month_name)

ALNUM = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
EPOCH = date(1970, 1, 1)


# ----------------------------------------------------------------------------- catalogue


@dataclass
class Catalog:
    """Per-item arrays (index = item) plus their display strings."""

    genre: np.ndarray  # int genre index
    artist: np.ndarray  # int artist index
    position: np.ndarray  # 0-based album position within the artist's discography (release order)
    release: np.ndarray  # release day (days since 1970-01-01)
    base_pop: np.ndarray  # Zipf weight within the genre
    asin: list[str]
    artist_name: list[str]
    album: list[str]
    title: list[str | None]  # raw meta title; None → the record has no "title" key
    subgenre: list[str]
    discography: list[list[int]]  # per artist: item indices in release order


def _parse_month(text: str) -> date:
    try:
        y, m = (int(p) for p in str(text).split("-"))
        return date(y, m, 1)
    except ValueError:
        raise ValueError(f"month {text!r} must be 'YYYY-MM'") from None


def _day(d: date) -> int:
    return (d - EPOCH).days


def _ids(rng: np.random.Generator, n: int, prefix: str, lengths: list[int], p: list[float]) -> list[str]:
    """n distinct random uppercase-alphanumeric ids, prefix + one of `lengths` characters."""
    out, seen = [], set()
    while len(out) < n:
        length = int(rng.choice(lengths, p=p))
        s = prefix + "".join(rng.choice(ALNUM, size=length))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _artist_name(rng: np.random.Generator, genre: str) -> str:
    adj, noun = rng.choice(ADJECTIVES), rng.choice(COUNT_NOUNS)  # the noun may take a plural "s"
    person = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    style = rng.random()
    if genre in ("Jazz", "Classical") and style < 0.5:
        return f"The {person} {rng.choice(BAND_SUFFIXES)}"
    if style < 0.35:
        return f"The {adj} {noun}s"
    if style < 0.7:
        return person
    return f"{adj} {noun}"


def _album_names(rng: np.random.Generator, n: int) -> list[str]:
    """Album names of one discography in release order: a numbered series or distinct albums."""
    base = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    if n >= 2 and rng.random() < 0.4:
        return [f"{base}, Vol. {k + 1}" for k in range(n)]  # the series an LLM can read off the titles
    names, seen = [], set()
    while len(names) < n:
        kind = rng.random()
        if kind < 0.15:
            name = f"Songs from the {rng.choice(NOUNS)}"
        elif kind < 0.25:
            name = f"{rng.choice(COUNT_NOUNS)}s and {rng.choice(COUNT_NOUNS)}s"
        else:
            name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    if n >= 3 and rng.random() < 0.3:
        names[-1] = f"Live at {rng.choice(VENUES)}"  # a live record closes many discographies
    return names


def _build_catalog(rng: np.random.Generator, n_items: int, n_genres: int, first_day: int, last_day: int) -> Catalog:
    # Bigger genres first, as in the real store (Rock and Pop dwarf Blues).
    share = 1.0 / (1.0 + 0.15 * np.arange(n_genres))
    sizes = np.floor(share / share.sum() * n_items).astype(int)
    sizes[: n_items - sizes.sum()] += 1

    genre, artist, position, release, base_pop = [], [], [], [], []
    artist_names, albums, subgenres, discography = [], [], [], []
    used_artists: set[str] = set()
    for g in range(n_genres):
        gname, subs = GENRES[g]
        left = int(sizes[g])
        genre_items = []
        while left > 0:
            k = min(left, int(rng.choice([1, 2, 3, 4], p=[0.3, 0.3, 0.25, 0.15])))
            left -= k
            name = _artist_name(rng, gname)
            while name in used_artists:
                name = _artist_name(rng, gname)
            used_artists.add(name)
            a = len(artist_names)
            artist_names.append(name)
            # Discographies start up to three years before the data and keep coming until near its end.
            day = int(rng.integers(first_day - 3 * 365, last_day - 120))
            sub = str(rng.choice(subs))
            items = []
            for pos, album in enumerate(_album_names(rng, k)):
                i = len(genre)
                genre.append(g)
                artist.append(a)
                position.append(pos)
                release.append(day)
                albums.append(album)
                subgenres.append(sub)
                items.append(i)
                day += int(rng.integers(90, 420))  # the next album follows a few months later
            discography.append(items)
            genre_items += items
        # Zipf-like popularity within the genre, over a random order of its (contiguous) items.
        ranks = rng.permutation(len(genre_items)) + 1
        base_pop += list(1.0 / ranks**ZIPF_EXPONENT)

    n = len(genre)
    asins = sorted(_ids(rng, n, "B0", [8], [1.0]))
    asins = [asins[i] for i in rng.permutation(n)]  # asin order unrelated to genre / artist
    titles: list[str | None] = [f"{artist_names[artist[i]]} - {albums[i]}" for i in range(n)]
    cat = Catalog(
        genre=np.array(genre),
        artist=np.array(artist),
        position=np.array(position),
        release=np.array(release),
        base_pop=np.array(base_pop),
        asin=asins,
        artist_name=artist_names,
        album=albums,
        title=titles,
        subgenre=subgenres,
        discography=discography,
    )
    _plant_title_faults(rng, cat)
    return cat


def _plant_title_faults(rng: np.random.Generator, cat: Catalog) -> None:
    """Overwrite a few titles with the faults found in the real meta (each item gets at most one)."""
    # Compilations sharing a bare title across artists ("Greatest Hits"): the last album of a few
    # discographies that are not numbered series.
    last_albums = [d[-1] for d in cat.discography if len(d) >= 3 and "Vol." not in cat.album[d[-1]]]
    picks = rng.choice(last_albums, size=min(len(DUPLICATE_TITLES), len(last_albums)), replace=False)
    for t, i in zip(DUPLICATE_TITLES, picks.tolist()):
        cat.album[i] = cat.title[i] = t

    order = iter(i for i in rng.permutation(len(cat.title)).tolist() if i not in set(picks.tolist()))
    for _ in range(max(3, len(cat.title) // 160)):  # a handful of scraped HTML instead of a title
        cat.title[next(order)] = HTML_FRAGMENT
    cat.title[next(order)] = HTML_FRAGMENT_ID  # the variant the reference filter looks for
    for _ in range(2):  # records without a "title" key
        cat.title[next(order)] = None
    for k in range(max(4, len(cat.title) // 120)):  # HTML entities that the filters must unescape
        i = next(order)
        if k % 2 == 0:
            cat.title[i] = f"{cat.artist_name[cat.artist[i]]} &amp; Friends - {cat.album[i]}"
        else:
            cat.title[i] = f"{cat.artist_name[cat.artist[i]]} - &quot;{cat.album[i]}&quot;"
    i = next(order)  # one title far over the 20-word limit
    cat.title[i] = (
        f"{cat.title[i]} (Deluxe 25th Anniversary Remastered Edition with Bonus Tracks, Rare Demos, "
        "Alternate Takes and Previously Unreleased Live Recordings)"
    )


# ----------------------------------------------------------------------------- users


@dataclass
class Interactions:
    user: np.ndarray
    item: np.ndarray
    day: np.ndarray
    rating: np.ndarray
    sequel: np.ndarray  # bool: this purchase followed the previous album of the same artist


# Behaviour constants, calibrated together so that with the defaults the pipeline's window back-off
# (2017-10..2018-11, 3 months a step, min_items 300) needs a few steps and stops around 2016-10,
# and a first-order next-item model roughly triples MostPop's HR@10.
P_FAVOURITE = 0.8  # share of free choices drawn from the user's favourite genres
P_SEQUEL = 0.55  # chance to buy the artist's next album right after the previous one (if released)
P_START_AT_ONE = 0.6  # chance a free pick of a later album is swapped for the artist's earliest unowned one
ZIPF_EXPONENT = 1.5  # item appeal ~ 1 / rank^a within a genre
GROWTH = 0.8  # shopper activity grows by a factor e^GROWTH (~2.2x) from the first to the last month
EXTRA_REVIEWS_P = 0.3  # reviews per user = 4 + Geometric(p), capped at 30 (mean ~7)
MEAN_GAP_DAYS = 45.0  # mean days between a user's reviews
RELEASE_BOOST = 3.0  # a brand-new album is (1 + boost) times as appealing ...
BOOST_DAYS = 120.0  # ... for a few months
FADE_FLOOR = 0.05  # albums go out of fashion: appeal decays to this share ...
FADE_DAYS = 365.0  # ... over a few years (item turnover makes longer windows hold more items)


def _simulate(rng: np.random.Generator, cat: Catalog, n_users: int, first_day: int, last_day: int) -> Interactions:
    n_items = len(cat.genre)
    n_genres = int(cat.genre.max()) + 1
    by_genre = [np.flatnonzero(cat.genre == g) for g in range(n_genres)]
    everything = np.arange(n_items)
    genre_share = np.array([len(ix) for ix in by_genre], dtype=float)
    genre_share /= genre_share.sum()
    next_album = np.full(n_items, -1)
    for d in cat.discography:
        next_album[d[:-1]] = d[1:]
    quality = rng.normal(0.0, 0.35, size=n_items)
    span = last_day - first_day
    owned = np.zeros(n_items, dtype=bool)  # the current user's purchases (reset per user)

    users, items, days, sequels, ratings = [], [], [], [], []
    for u in range(n_users):
        # Tastes: 1-2 favourite genres, bigger genres more likely.
        fav = rng.choice(n_genres, size=1 if rng.random() < 0.5 else 2, replace=False, p=genre_share)
        fav_cum = np.cumsum(rng.dirichlet(np.full(len(fav), 2.0)))
        mood = rng.normal(4.3, 0.35)  # the user's rating bias

        # 5-30 reviews, skewed towards few; gaps are mostly weeks to months, some same-day binges.
        n = 5 + min(25, int(rng.geometric(EXTRA_REVIEWS_P)) - 1)
        gaps = np.floor(rng.exponential(MEAN_GAP_DAYS, size=n)).astype(int)
        gaps[0] = 0
        gaps[rng.random(n) < 0.1] = 0
        total = int(gaps.sum())
        if total > span:  # very long histories are squeezed into the period
            gaps = np.floor(gaps * (span / total)).astype(int)
            total = int(gaps.sum())
        # Place the history around an anchor day whose density grows exponentially over the period
        # (more shoppers every year), then keep it inside the period.
        anchor = first_day + span * np.log1p(rng.random() * np.expm1(GROWTH)) / GROWTH
        t0 = t = int(np.clip(anchor - rng.random() * total, first_day, last_day - total))

        draws = rng.random((n, 4))  # sequel?, favourite?, which genre, start-at-one?
        start = len(items)
        prev = -1
        for k in range(n):
            nxt = next_album[prev] if prev >= 0 else -1
            if nxt >= 0 and not owned[nxt] and draws[k, 0] < P_SEQUEL:
                # The sequel comes soon after (1-3 weeks), never later than the planned gap.
                gap = max(1, min(int(rng.integers(1, 22)), int(gaps[k])))
                if cat.release[nxt] <= t + gap <= last_day:
                    t += gap
                    items.append(int(nxt)), days.append(t), sequels.append(True)
                    owned[nxt] = True
                    prev = int(nxt)
                    continue
            t = min(t + int(gaps[k]), last_day)  # an extra day spent on a sequel must not overrun
            if draws[k, 1] < P_FAVOURITE:
                g = int(fav[np.searchsorted(fav_cum, draws[k, 2] * fav_cum[-1])])
            else:
                g = int(np.searchsorted(np.cumsum(genre_share), draws[k, 2], side="right").clip(0, n_genres - 1))
            i = _pick(rng, cat, by_genre[g], t, owned)
            if i < 0:  # nothing released and unbought in this genre yet: any genre will do
                i = _pick(rng, cat, everything, t, owned)
            if i < 0:
                break
            if cat.position[i] > 0 and draws[k, 3] < P_START_AT_ONE:
                # Newcomers to an artist tend to start at the beginning of the discography.
                i = next(j for j in cat.discography[cat.artist[i]] if not owned[j] and cat.release[j] <= t)
            items.append(i), days.append(t), sequels.append(False)
            owned[i] = True
            prev = i
        mine = np.array(items[start:], dtype=int)
        if not len(mine):
            continue
        owned[mine] = False
        # Sequels came sooner than planned: shift the history right so it still ends where planned
        # (keeps late activity dense; a later date never precedes a release).
        slack = min(t0 + total, last_day) - days[-1]
        if slack > 0:
            days[start:] = [d + slack for d in days[start:]]
        users += [u] * len(mine)
        # Ratings: user bias + album quality + noise; favourite genres and sequels please more.
        bonus = 0.3 * np.isin(cat.genre[mine], fav) + 0.3 * np.array(sequels[start:], dtype=float)
        raw = mood + quality[mine] + bonus + rng.normal(0.0, 0.9, size=len(mine))
        ratings += np.clip(np.rint(raw), 1, 5).tolist()
    return Interactions(
        user=np.array(users, dtype=int),
        item=np.array(items, dtype=int),
        day=np.array(days, dtype=int),
        rating=np.array(ratings, dtype=float),
        sequel=np.array(sequels, dtype=bool),
    )


def _pick(rng: np.random.Generator, cat: Catalog, cand: np.ndarray, t: int, owned: np.ndarray) -> int:
    """Popularity-weighted choice among released, unowned candidates; new releases get a boost."""
    age = t - cat.release[cand]
    aged = np.maximum(age, 0)
    fade = FADE_FLOOR + (1.0 - FADE_FLOOR) * np.exp(-aged / FADE_DAYS)
    w = cat.base_pop[cand] * fade * (1.0 + RELEASE_BOOST * np.exp(-aged / BOOST_DAYS))
    w[(age < 0) | owned[cand]] = 0.0  # not out yet, or already owned
    cum = np.cumsum(w)
    if cum[-1] <= 0:
        return -1
    return int(cand[min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(cand) - 1)])


def _kcore(users: np.ndarray, items: np.ndarray, k: int = 5) -> np.ndarray:
    """Mask of the strict k-core: the released *_5 files have ≥ k reviews per user and per item."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        u_cnt = np.bincount(users[keep], minlength=users.max() + 1)
        i_cnt = np.bincount(items[keep], minlength=items.max() + 1)
        bad = keep & ((u_cnt[users] < k) | (i_cnt[items] < k))
        if not bad.any():
            return keep
        keep &= ~bad


# ----------------------------------------------------------------------------- records


def _review_time(day: int) -> tuple[str, int]:
    """('MM D, YYYY', unix seconds at midnight UTC) as in the real files, e.g. '09 1, 2016'."""
    d = EPOCH + timedelta(days=int(day))
    return f"{d.month:02d} {d.day}, {d.year}", int(day) * 86400


def _reviewer_names(rng: np.random.Generator, n: int) -> list[str]:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.12:
            out.append("Amazon Customer")
        elif r < 0.55:
            out.append(f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)[0]}.")
        else:
            out.append(f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}")
    return out


def _review_texts(
    rng: np.random.Generator, stars: np.ndarray, genre: list[str], artist: list[str]
) -> tuple[list, list]:
    """(reviewText, summary) per review from the phrase lists; drawn in bulk because it is the hot loop."""
    n = len(stars)
    u = rng.random((n, 2))
    n_details = rng.integers(0, 3, size=n)
    detail_idx = np.argsort(rng.random((n, len(DETAILS))), axis=1)[:, :2]  # two distinct phrases
    texts, summaries = [], []
    for r in range(n):
        s = int(stars[r])
        parts = [OPENERS[s][int(u[r, 0] * len(OPENERS[s]))]]
        parts += [DETAILS[j].format(g=genre[r].lower(), a=artist[r]) for j in detail_idx[r, : n_details[r]]]
        texts.append(" ".join(parts))
        summaries.append(SUMMARIES[s][int(u[r, 1] * len(SUMMARIES[s]))])
    return texts, summaries


def _meta_record(cat: Catalog, i: int, rank: int, price: float, also_buy: list[str]) -> dict:
    g = int(cat.genre[i])
    artist = cat.artist_name[cat.artist[i]]
    rel = EPOCH + timedelta(days=int(cat.release[i]))
    ordinal = ["first", "second", "third", "fourth"][int(cat.position[i])]
    rec = {
        "category": ["CDs & Vinyl", GENRES[g][0], cat.subgenre[i]],
        "description": [f"{cat.album[i]} is the {ordinal} album by {artist}."],
    }
    if cat.title[i] is not None:  # the real meta simply omits the key
        rec["title"] = cat.title[i]
    rec.update(
        {
            "also_buy": also_buy,
            "brand": artist,
            "rank": f"{rank:,} in CDs & Vinyl (",
            "main_cat": "CDs & Vinyl",
            "date": f"{MONTH_NAMES[rel.month]} {rel.day}, {rel.year}",
            "price": f"${price:.2f}",
            "asin": cat.asin[i],
        }
    )
    return rec


def _write_gz_lines(path: Path, lines, inner_name: str) -> None:
    """Gzip with a fixed header (no mtime, fixed name) so equal content gives equal bytes; atomic."""
    with atomic_path(path) as tmp:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename=inner_name, mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
        ):
            with io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as fh:
                for line in lines:
                    fh.write(line)
                    fh.write("\n")


# ----------------------------------------------------------------------------- public API


def generate(
    out_reviews: str | os.PathLike,
    out_meta: str | os.PathLike,
    *,
    n_users: int = 2500,
    n_items: int = 800,
    n_genres: int = 8,
    seed: int = 7,
    start: str = "2014-01",
    end: str = "2018-10",
) -> dict:
    """Write the reviews (5-core) and meta files; return summary counts.

    `start`/`end` are inclusive months ('YYYY-MM') bounding the review dates.
    """
    if not 1 <= n_genres <= len(GENRES):
        raise ValueError(f"n_genres must be between 1 and {len(GENRES)}, got {n_genres}")
    if n_items < 10 * n_genres or n_users < 10:
        raise ValueError("need at least 10 items per genre and 10 users")
    first = _parse_month(start)
    end_first = _parse_month(end)
    last = end_first.replace(day=calendar.monthrange(end_first.year, end_first.month)[1])
    if last <= first:
        raise ValueError(f"end {end!r} must come after start {start!r}")
    first_day, last_day = _day(first), _day(last)

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    cat = _build_catalog(rng, n_items, n_genres, first_day, last_day)
    inter = _simulate(rng, cat, n_users, first_day, last_day)
    keep = _kcore(inter.user, inter.item)
    user, item, day, rating, sequel = (a[keep] for a in (inter.user, inter.item, inter.day, inter.rating, inter.sequel))

    # Reviewer ids like 'A3CIUOJXQ5VDQ2': 'A' + 13 (sometimes 12) uppercase alphanumerics.
    reviewer_ids = _ids(rng, n_users, "A", [13, 12], [0.85, 0.15])
    reviewer_names = _reviewer_names(rng, n_users)

    # File order of the real dumps: items by asin, each item's reviews in no particular order.
    asin_rank = np.argsort(np.argsort(np.array(cat.asin)))
    order = np.lexsort((rng.random(len(item)), asin_rank[item]))
    review_years = day.astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
    # More reviews carry the "Verified Purchase" badge in later years, as in the real data.
    verified = rng.random(len(item)) < np.clip(0.45 + 0.08 * (review_years - 2014), 0.3, 0.9)
    votes = np.where(rng.random(len(item)) < 0.15, rng.geometric(0.35, size=len(item)) + 1, 0)

    texts, summaries = _review_texts(
        rng,
        rating[order],
        [GENRES[g][0] for g in cat.genre[item[order]]],
        [cat.artist_name[a] for a in cat.artist[item[order]]],
    )

    def review_lines():
        for k, r in enumerate(order):
            i, stars = int(item[r]), int(rating[r])
            review_time, unix = _review_time(int(day[r]))
            rec = {"overall": float(stars)}
            if votes[r]:
                rec["vote"] = str(int(votes[r]))
            rec.update(
                {
                    "verified": bool(verified[r]),
                    "reviewTime": review_time,
                    "reviewerID": reviewer_ids[user[r]],
                    "asin": cat.asin[i],
                    "style": {"Format:": " Audio CD"},
                    "reviewerName": reviewer_names[user[r]],
                    "reviewText": texts[k],
                    "summary": summaries[k],
                    "unixReviewTime": unix,
                }
            )
            yield json.dumps(rec)

    out_reviews, out_meta = Path(out_reviews), Path(out_meta)
    _write_gz_lines(out_reviews, review_lines(), out_reviews.name.removesuffix(".gz"))

    # Meta for every catalogue item (the real meta also lists items without 5-core reviews).
    counts = np.bincount(item, minlength=len(cat.genre))
    sales_rank = np.argsort(np.argsort(-(counts + cat.base_pop)))  # 0 = best seller
    meta_lines = []
    for i in np.argsort(np.array(cat.asin)):
        i = int(i)
        same_genre = [int(j) for j in np.flatnonzero(cat.genre == cat.genre[i]) if j != i and sales_rank[j] < 200]
        co = [j for j in cat.discography[cat.artist[i]] if j != i]
        co += [int(j) for j in rng.choice(same_genre, size=min(3, len(same_genre)), replace=False)]
        rank = int(2_000 + sales_rank[i] * 900 + rng.integers(0, 900))
        price = float(rng.choice([7.99, 9.99, 11.99, 12.99, 13.98, 14.99, 17.99, 24.99]))
        meta_lines.append(json.dumps(_meta_record(cat, i, rank, price, [cat.asin[j] for j in co])))
    _write_gz_lines(out_meta, meta_lines, out_meta.name.removesuffix(".gz"))

    per_year = {int(y): int(c) for y, c in zip(*np.unique(review_years, return_counts=True))}
    titles = [t for t in cat.title if t is not None]
    readable = [t for t in titles if not t.startswith("<")]
    return {
        "seed": seed,
        "n_users": int(np.unique(user).size),
        "n_items": int(np.unique(item).size),
        "n_reviews": int(len(item)),
        "n_reviews_before_5core": int(len(inter.item)),
        "n_meta_items": len(cat.genre),
        "n_artists": len(cat.discography),
        "sequel_share": round(float(sequel.mean()), 4) if len(sequel) else 0.0,
        "reviews_per_year": per_year,
        "first_review": _review_time(int(day.min()))[0] if len(day) else None,
        "last_review": _review_time(int(day.max()))[0] if len(day) else None,
        "faults": {
            "html_fragment_titles": sum(t.startswith("<span") for t in titles),
            "missing_titles": sum(t is None for t in cat.title),
            "entity_titles": sum("&amp;" in t or "&quot;" in t for t in titles),
            "long_titles": sum(len(t.split()) > 20 for t in titles),
            "duplicate_titles": len(readable) - len(set(readable)),
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }
