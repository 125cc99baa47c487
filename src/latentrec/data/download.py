"""Robust download of the Amazon Review Data 2018 dumps (or any single file).

Files are streamed into a hidden `.NAME.part` sibling, resumed with HTTP Range after an interruption,
retried with exponential back-off, verified (size, sha256, full gzip decompression for .gz) and only
then renamed onto the destination, so a corrupt or half-written file never sits at `dest`.

An attempt ends when the server goes silent for `timeout_s` (one read) and also when it keeps sending
too slowly: fewer than `min_rate` bytes per second averaged over the last `stall_window_s` seconds
(a server trickling a byte every few seconds never trips a per-read timeout). Either counts as a
transient failure: the next attempt resumes from the partial file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import time
import zlib
from collections import deque
from pathlib import Path

import requests
import urllib3

from latentrec.errors import InputError
from latentrec.io_utils import progress

AMAZON2018_BASE_URL = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/"
REVIEW_FILES = ("5core", "full")
MIN_RATE = 1024  # bytes/s: slower than this, averaged over STALL_WINDOW_S, abandons the attempt
STALL_WINDOW_S = 60.0


def amazon2018_filenames(category: str, review_file: str = "5core") -> dict[str, str]:
    """Local (and remote) file names: {'reviews': 'Cat_5.json.gz' | 'Cat.json.gz', 'meta': 'meta_Cat.json.gz'}."""
    if review_file not in REVIEW_FILES:
        raise InputError(f"review_file={review_file!r}: use one of {', '.join(REVIEW_FILES)}")
    reviews = f"{category}_5.json.gz" if review_file == "5core" else f"{category}.json.gz"
    return {"reviews": reviews, "meta": f"meta_{category}.json.gz"}


def amazon2018_urls(
    category: str,
    review_file: str = "5core",
    base_url: str = AMAZON2018_BASE_URL,
    *,
    five_core_dir: str = "categoryFilesSmall",
    full_dir: str = "categoryFiles",
    meta_dir: str = "metaFiles2",
) -> dict[str, str]:
    """URLs of the review and metadata dumps of one category: {'reviews': url, 'meta': url}."""
    names = amazon2018_filenames(category, review_file)
    review_dir = five_core_dir if review_file == "5core" else full_dir

    def join(folder: str, name: str) -> str:
        return "/".join(p.strip("/") for p in (base_url, folder, name) if p.strip("/"))

    return {"reviews": join(review_dir, names["reviews"]), "meta": join(meta_dir, names["meta"])}


class _Retry(Exception):
    """A transient failure (5xx, truncated body, ...) worth another attempt."""


class _Stalled(_Retry):
    """The body arrives slower than the minimum rate: abandon this attempt, resume in the next."""


class _RateGuard:
    """Raises _Stalled once fewer than `min_rate` bytes/s arrived over the last `window_s` seconds.

    Checked after every read, so the first check is `window_s` after the body started (a server that
    sends nothing at all is caught sooner by the per-read timeout). `min_rate <= 0` turns it off.
    """

    def __init__(self, min_rate: float, window_s: float, clock=time.monotonic):
        self.min_rate, self.window_s, self.clock = min_rate, window_s, clock
        self.total = 0
        # (time, bytes so far) samples, at most one per window/64, oldest first; samples[0] is the
        # newest one at least window_s old, so the average spans window_s to window_s * (1 + 1/64).
        self.samples = deque([(clock(), 0)])

    def add(self, n: int) -> None:
        if self.min_rate <= 0:
            return
        now = self.clock()
        self.total += n
        if now - self.samples[-1][0] >= self.window_s / 64:
            self.samples.append((now, self.total))
        while len(self.samples) > 1 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()
        t_old, b_old = self.samples[0]
        span = now - t_old
        if span >= self.window_s and (got := self.total - b_old) < self.min_rate * span:
            raise _Stalled(
                f"stalled: {got} bytes in the last {span:.3g} s, below the minimum of {self.min_rate:g} B/s "
                f"averaged over {self.window_s:g} s"
            )


# requests wraps most urllib3 errors, but reading r.raw directly surfaces urllib3's own.
_TRANSIENT = (_Retry, requests.RequestException, urllib3.exceptions.HTTPError)


def part_path(dest: str | os.PathLike) -> Path:
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.part")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    offline: bool = False,
    timeout_s: float = 60,
    chunk: int = 1 << 20,
    min_rate: float = MIN_RATE,
    stall_window_s: float = STALL_WINDOW_S,
) -> Path:
    """Download `url` to `dest` (resuming, retrying, verifying) and return `dest`.

    An existing `dest` that verifies is returned without network access. With `offline=True` the
    network is never used. Raises InputError (naming the file and the fix) when the file cannot be had.
    `timeout_s` bounds one read; an attempt whose body averages under `min_rate` bytes/s over the last
    `stall_window_s` seconds is abandoned too (and retried, resuming); `min_rate=0` turns that off.
    """
    dest = Path(dest)
    part = part_path(dest)
    if min_rate > 0 and not stall_window_s > 0:
        raise InputError(f"stall window {stall_window_s} s: must be positive (or set the minimum rate to 0)")
    if dest.exists():
        problem = _verify(dest, dest.name, expected_size, sha256, chunk)
        if problem is None:
            return dest
        if offline:
            raise InputError(f"{dest}: {problem}. Replace it with a good copy of {url} (or delete it and run online).")
    if offline:
        raise InputError(f"{dest}: file missing and offline mode is on. Download {url} and place it at {dest}.")

    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, dest.name, expected_size, sha256, timeout_s, chunk, min_rate, stall_window_s)
            break
        except _TRANSIENT as e:
            if attempt == retries:
                slow = (
                    (
                        " If the link is this slow, lower the minimum rate (download.min_rate in the config or "
                        "--min-rate, bytes/s) or lengthen its window (download.stall_window_s or --stall-window, "
                        "seconds)."
                    )
                    if isinstance(e, _Stalled)
                    else ""
                )
                raise InputError(
                    f"{dest}: download of {url} failed after {retries + 1} attempts ({e}). Check the network and "
                    f"rerun (the partial file {part} is resumed), or place the file at {dest} by hand.{slow}"
                ) from e
            time.sleep(backoff_s * 2**attempt)

    problem = _verify(part, dest.name, expected_size, sha256, chunk)
    if problem is not None:
        part.unlink(missing_ok=True)  # never resume from (or keep) corrupt data
        raise InputError(
            f"{dest}: downloaded file from {url} is corrupt: {problem}. Nothing was saved; rerun to download "
            f"again, and if it persists check the URL or place a good copy at {dest} by hand."
        )
    os.replace(part, dest)  # atomic: readers see either no file or the verified one
    return dest


def _fetch(url, part, name, expected_size, sha256, timeout_s, chunk, min_rate, stall_window_s) -> None:
    """One attempt: append to `part` from its current size. Raises _Retry on transient problems."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()  # can't be a prefix of the right file
        offset = 0
    # identity encoding: byte offsets must refer to the file as stored, not a re-compressed stream
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with requests.get(url, headers=headers, stream=True, timeout=timeout_s) as r:
        if r.status_code == 416:  # part is already whole, or longer than the remote file
            total = _content_range(r.headers.get("Content-Range"))[2]
            if (total is None or total == offset) and _verify(part, name, expected_size, sha256, chunk) is None:
                return
            part.unlink(missing_ok=True)
            raise _Retry("HTTP 416 and the partial file does not verify; restarting from zero")
        if r.status_code >= 500 or r.status_code == 429:
            raise _Retry(f"HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            raise InputError(f"{part.parent / name}: HTTP {r.status_code} for {url}. Check the URL / category name.")

        length = r.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if r.status_code == 206:
            start, _, total = _content_range(r.headers.get("Content-Range"))
            if start != offset:  # not the range we asked for: don't splice it in
                part.unlink(missing_ok=True)
                raise _Retry(f"server answered range start {start}, asked {offset}; restarting")
            if total is None and length is not None:
                total = offset + length
        else:  # 200: full body (server ignored Range, or fresh start)
            offset, total = 0, length

        guard = _RateGuard(min_rate, stall_window_s)  # the clock starts with the body
        with (
            open(part, "ab" if offset else "wb") as fh,
            progress(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name) as bar,
        ):
            # raw stream, no content decoding: a .gz served with Content-Encoding: gzip stays compressed
            for block in _blocks(r.raw, chunk):
                fh.write(block)
                bar.update(len(block))
                guard.add(len(block))

    got = part.stat().st_size
    if total is not None and got < total:
        raise _Retry(f"truncated transfer: {got} of {total} bytes")


def _blocks(raw, chunk: int):
    """The body as it arrives: read1 returns what one socket read brings (up to `chunk`), so the rate
    guard runs between reads; read(chunk) would wait for a whole chunk that a trickle never fills."""
    if not hasattr(raw, "read1"):  # urllib3 < 2
        yield from raw.stream(chunk, decode_content=False)
        return
    while block := raw.read1(chunk, decode_content=False):
        yield block


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """Parse 'bytes START-END/TOTAL' or 'bytes */TOTAL' (TOTAL may be '*')."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None
    return tuple(int(g) if g and g != "*" else None for g in m.groups())  # type: ignore[return-value]


def _verify(path: Path, name: str, expected_size, sha256, chunk) -> str | None:
    """Return what is wrong with `path`, or None if it passes every requested check."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"size is {size} bytes, expected {expected_size}"
    if sha256:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
        if h.hexdigest() != sha256.lower():
            return f"sha256 is {h.hexdigest()}, expected {sha256.lower()}"
    if name.endswith(".gz"):
        if size == 0:
            return "empty file, not gzip"
        try:  # decompress it all: catches truncation and HTML error pages saved as .gz
            with gzip.open(path, "rb") as fh:
                while fh.read(chunk):
                    pass
        except (OSError, EOFError, zlib.error) as e:
            return f"not a complete gzip stream ({e})"
    return None
