"""download(): resume, retries, verification and offline mode against a real local HTTP server."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from latentrec.commands.data import add_parsers
from latentrec.data.download import _RateGuard, amazon2018_urls, download, part_path
from latentrec.errors import InputError

PAYLOAD = gzip.compress(random.Random(0).randbytes(50_000), mtime=0)
CUT_AT = 8192  # bytes sent before the first connection is dropped (a multiple of CHUNK)
CHUNK = 1024
# mode: (bytes per write, seconds between writes). trickle: 50 B/s, never caught by a per-read timeout;
# slow: ~0.4-0.8 MB/s with pauses between writes.
DRIP = {"trickle": (1, 0.02), "slow": (4096, 0.005)}
FAST = dict(backoff_s=0.01, timeout_s=5, chunk=CHUNK)


class Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at /<mode>/<name>; mode picks the misbehaviour."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        mode = self.path.split("/")[1]
        rng = self.headers.get("Range")
        srv.seen.append((self.path, rng))
        n_before = sum(p == self.path for p, _ in srv.seen) - 1
        if mode == "flaky" and n_before < 3:
            return self._reply(503, b"busy")
        if mode == "missing":
            return self._reply(404, b"not found")
        data = b"<html>502 Bad Gateway</html>" if mode == "corrupt" else PAYLOAD
        start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng and mode != "norange" else 0
        if start >= len(data) and rng:
            return self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        body = data[start:]
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
        if mode in DRIP:
            return self._drip(206 if start else 200, body, headers, *DRIP[mode])
        self._reply(206 if start else 200, body, headers, cut=mode == "cut" and n_before == 0)

    def _reply(self, status, body, headers=None, cut=False):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body[:CUT_AT] if cut else body)
        self.close_connection = True  # with `cut`, the client sees a body shorter than Content-Length

    def _drip(self, status, body, headers, size, pause, max_s=5.0):
        """Send `size` bytes every `pause` seconds (for at most max_s, then hang up)."""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        t0 = time.monotonic()
        try:
            for i in range(0, len(body), size):
                if time.monotonic() - t0 > max_s:
                    break
                self.wfile.write(body[i : i + size])
                time.sleep(pause)
        except OSError:  # the client hung up
            pass
        self.close_connection = True


@pytest.fixture(scope="module")
def _server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server(_server):
    _server.seen = []  # per-test request log (also drives the flaky/cut modes)
    return _server


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    dest = tmp_path / "Cat_5.json.gz"
    assert download(f"{server.base}/cut/{dest.name}", dest, **FAST) == dest
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.seen] == [None, f"bytes={CUT_AT}-"]
    assert not part_path(dest).exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    part_path(dest).write_bytes(b"garbage-prefix")  # a stale part the server won't let us append to
    download(f"{server.base}/norange/x.json.gz", dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.seen[0][1] == "bytes=14-"


def test_416_with_complete_part_verifies_without_body(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    part_path(dest).write_bytes(PAYLOAD)
    download(f"{server.base}/ok/x.json.gz", dest, **FAST)
    assert dest.read_bytes() == PAYLOAD and len(server.seen) == 1


def test_416_with_oversized_part_restarts(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    part_path(dest).write_bytes(PAYLOAD + b"junk")
    download(f"{server.base}/ok/x.json.gz", dest, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.seen] == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_503_is_retried(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    download(f"{server.base}/flaky/x.json.gz", dest, retries=5, **FAST)
    assert dest.read_bytes() == PAYLOAD and len(server.seen) == 4


def test_retries_exhausted_raises(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    with pytest.raises(InputError, match="failed after 2 attempts"):
        download(f"{server.base}/flaky/x.json.gz", dest, retries=1, **FAST)
    assert not dest.exists()


def test_trickling_server_gives_up_after_the_retries(server, tmp_path):
    """A byte every 20 ms keeps every read under the 5 s read timeout; the minimum rate (1000 B/s over
    0.3 s) ends each attempt, each retry resumes the partial file, and the last one fails clearly."""
    dest = tmp_path / "x.json.gz"
    t0 = time.monotonic()
    with pytest.raises(InputError) as e:
        download(f"{server.base}/trickle/x.json.gz", dest, retries=2, min_rate=1000, stall_window_s=0.3, **FAST)
    assert time.monotonic() - t0 < 10
    msg = str(e.value)
    assert re.search(
        r"failed after 3 attempts \(stalled: \d+ bytes in the last 0\.\d+ s, below the minimum of "
        r"1000 B/s averaged over 0\.3 s\)",
        msg,
    ), msg
    assert "--min-rate" in msg and str(part_path(dest)) in msg
    ranges = [r for _, r in server.seen]
    assert len(ranges) == 3 and ranges[0] is None
    offsets = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:]]
    assert 0 < offsets[0] < offsets[1] < part_path(dest).stat().st_size  # each attempt resumed the last
    assert not dest.exists()


def test_slow_but_steady_server_passes_the_rate_check(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    download(f"{server.base}/slow/x.json.gz", dest, min_rate=5000, stall_window_s=0.05, retries=0, **FAST)
    assert dest.read_bytes() == PAYLOAD and len(server.seen) == 1


def test_rate_guard_averages_over_the_window():
    now = [0.0]
    guard = _RateGuard(min_rate=100, window_s=10, clock=lambda: now[0])
    for _ in range(20):  # 150 B/s
        now[0] += 1
        guard.add(150)
    now[0] += 3  # a pause: the last 10 s still average 105 B/s
    guard.add(0)
    now[0] += 3  # a longer one: 60 B/s
    with pytest.raises(Exception, match=r"stalled: 600 bytes in the last 10 s"):
        guard.add(0)
    off = _RateGuard(min_rate=0, window_s=10, clock=lambda: now[0])
    now[0] += 100
    off.add(0)


def test_404_raises_without_retry(server, tmp_path):
    with pytest.raises(InputError, match="HTTP 404"):
        download(f"{server.base}/missing/x.json.gz", tmp_path / "x.json.gz", **FAST)
    assert len(server.seen) == 1


def test_corrupt_gzip_raises_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    with pytest.raises(InputError, match=r"x\.json\.gz.*corrupt"):
        download(f"{server.base}/corrupt/x.json.gz", dest, **FAST)
    assert not dest.exists() and not part_path(dest).exists()


def test_sha256_mismatch_raises(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    with pytest.raises(InputError, match="sha256"):
        download(f"{server.base}/ok/x.json.gz", dest, sha256="0" * 64, **FAST)
    assert not dest.exists() and not part_path(dest).exists()


def test_sha256_and_size_match(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    download(f"{server.base}/ok/x.json.gz", dest, sha256=digest, expected_size=len(PAYLOAD), **FAST)
    assert dest.read_bytes() == PAYLOAD


def test_size_mismatch_raises(server, tmp_path):
    with pytest.raises(InputError, match="expected 123"):
        download(f"{server.base}/ok/x.json.gz", tmp_path / "x.json.gz", expected_size=123, retries=0, **FAST)


def test_offline_missing_names_path_and_url(server, tmp_path):
    dest = tmp_path / "sub" / "x.json.gz"
    url = f"{server.base}/ok/x.json.gz"
    with pytest.raises(InputError) as e:
        download(url, dest, offline=True, **FAST)
    assert str(dest) in str(e.value) and url in str(e.value)
    assert server.seen == []


def test_offline_present_file_returned_without_request(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    dest.write_bytes(PAYLOAD)
    assert download(f"{server.base}/ok/x.json.gz", dest, offline=True, **FAST) == dest
    assert server.seen == []


def test_offline_corrupt_file_raises(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    dest.write_bytes(b"<html>")
    with pytest.raises(InputError, match="gzip"):
        download(f"{server.base}/ok/x.json.gz", dest, offline=True, **FAST)


def test_existing_valid_dest_not_redownloaded(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    dest.write_bytes(PAYLOAD)
    download(f"{server.base}/ok/x.json.gz", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), **FAST)
    assert server.seen == []


def test_existing_corrupt_dest_is_replaced(server, tmp_path):
    dest = tmp_path / "x.json.gz"
    dest.write_bytes(PAYLOAD[:100])  # truncated gzip
    download(f"{server.base}/ok/x.json.gz", dest, **FAST)
    assert dest.read_bytes() == PAYLOAD


def test_amazon2018_urls():
    base = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2/"
    assert amazon2018_urls("CDs_and_Vinyl") == {
        "reviews": base + "categoryFilesSmall/CDs_and_Vinyl_5.json.gz",
        "meta": base + "metaFiles2/meta_CDs_and_Vinyl.json.gz",
    }
    urls = amazon2018_urls("Books", "full", base_url="http://mirror/x", meta_dir="meta")
    assert urls == {
        "reviews": "http://mirror/x/categoryFiles/Books.json.gz",
        "meta": "http://mirror/x/meta/meta_Books.json.gz",
    }
    with pytest.raises(InputError):
        amazon2018_urls("Books", "10core")


def test_cli(server, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    url = f"{server.base}/ok/x.json.gz"
    args = parser.parse_args(
        [
            "download",
            "--url",
            url,
            "--out",
            str(tmp_path),
            "--retries",
            "1",
            "--min-rate",
            "1",
            "--stall-window",
            "30",
            "--timeout",
            "5",
        ]
    )
    assert (args.min_rate, args.stall_window, args.timeout) == (1, 30, 5)
    assert args.func(args) == 0
    assert (tmp_path / "x.json.gz").read_bytes() == PAYLOAD
    out = str(tmp_path / "y.json.gz")
    args = parser.parse_args(["download", "--url", "http://unused/y.json.gz", "--out", out, "--offline"])
    with pytest.raises(InputError, match="y.json.gz"):
        args.func(args)
