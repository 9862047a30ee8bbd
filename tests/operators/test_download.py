"""The downloader against a loopback server that fails on cue: retries, Range resume, validation.

Every transfer is of a real WARC of the corpus (copied into a temporary mirror); a fetch counts as good
only if the bytes at ``dest`` equal the original's.
"""

from __future__ import annotations

import gzip
import os
import shutil
import threading
import time
import zlib

import pytest

from operators.download import DownloadError, FetchStats, S3Options, backoff_delay, fetch, gzip_problem
from tests.conftest import WEB
from tests.faultserver import FaultServer

SMALL = "cc-2020-08-sample.warc.gz"  # 136 KB
BIG = "eval-pages-00000.warc.gz"  # 4.7 MB: several 1 MiB reads
FAST = {"timeout_s": 1.0, "backoff_s": 0.01, "max_backoff_s": 0.05}


@pytest.fixture()
def mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    for name in (SMALL, BIG):
        shutil.copy(WEB / name, root / name)
    (root / "notes.txt").write_bytes(b"plain text, checked by its size only\n" * 1000)
    (root / "plain.warc.gz").write_bytes((WEB / "broken" / "example-trunc.warc").read_bytes())  # not gzip
    data = (WEB / SMALL).read_bytes()
    (root / "truncated.warc.gz").write_bytes(data[: len(data) // 2])
    return root


def same(path, name) -> bool:
    return open(path, "rb").read() == (WEB / name).read_bytes()


def gets(server, suffix=""):
    return [(r.range, r.status, r.fault) for r in server.requests(suffix)]


# --------------------------------------------------------------------------------------------------
# The happy path and the cache


def test_a_clean_download_then_a_cache_hit(mirror, tmp_path):
    dest = tmp_path / "cache" / "a" / SMALL
    with FaultServer(mirror) as server:
        stats = fetch(server.url + SMALL, dest, **FAST)
        assert same(dest, SMALL)
        assert (stats.downloads, stats.retries, stats.resumes, stats.cache_hits) == (1, 0, 0, 0)
        assert stats.bytes == os.path.getsize(WEB / SMALL)
        again = fetch(server.url + SMALL, dest, **FAST)
        assert (again.downloads, again.cache_hits, again.bytes) == (0, 1, 0)
        assert gets(server) == [(None, 200, None)]  # the cache hit made no request
    assert not os.path.exists(f"{dest}.part")
    assert stats.counters() == {"download_files": 1, "download_bytes": stats.bytes}


# --------------------------------------------------------------------------------------------------
# Faults that a retry fixes


def test_server_errors_are_retried(mirror, tmp_path):
    dest = tmp_path / SMALL
    with FaultServer(mirror, script={1: "500", 2: "503", 3: "429"}) as server:
        stats = fetch(server.url + SMALL, dest, **FAST)
        assert [s for _, s, _ in gets(server)] == [500, 503, 429, 200]
    assert same(dest, SMALL)
    assert stats.retries == 3 and stats.failures == {"http_500": 1, "http_503": 1, "http_429": 1}


@pytest.mark.parametrize("fault", ["cut", "reset"])
def test_a_cut_connection_resumes_with_range(mirror, tmp_path, fault):
    dest = tmp_path / BIG
    size = os.path.getsize(WEB / BIG)
    with FaultServer(mirror, script={1: fault}) as server:
        stats = fetch(server.url + BIG, dest, **FAST)
        (r1, s1, _), (r2, s2, _) = gets(server)
        first = server.requests()[0].sent
    assert same(dest, BIG)
    assert (r1, s1) == (None, 200)
    assert s2 == 206 and r2.startswith("bytes=") and 0 < int(r2[6:-1]) <= first
    assert stats.resumes == 1 and stats.retries == 1 and stats.failures == {"cut": 1}
    if fault == "cut":  # a clean close: every byte that arrived was kept, none fetched twice
        assert r2 == f"bytes={size // 2}-" and stats.bytes == size


def test_a_stall_times_out_and_resumes(mirror, tmp_path):
    dest = tmp_path / BIG
    with FaultServer(mirror, script={1: "stall", 2: "stall_headers"}, stall_s=10) as server:
        t0 = time.monotonic()
        stats = fetch(server.url + BIG, dest, timeout_s=0.5, backoff_s=0.01)
        elapsed = time.monotonic() - t0
        log = gets(server)
    assert same(dest, BIG)
    assert elapsed < 5  # two 0.5 s timeouts, not the server's 10 s stalls
    assert stats.failures == {"timeout": 2} and stats.resumes == 1
    quarter = os.path.getsize(WEB / BIG) // 4
    assert [r for r, _, _ in log] == [None, f"bytes={quarter}-", f"bytes={quarter}-"]


def test_a_server_that_ignores_range_restarts_the_file_cleanly(mirror, tmp_path):
    dest = tmp_path / BIG
    size = os.path.getsize(WEB / BIG)
    with FaultServer(mirror, script={1: "cut"}, ignore_range=True) as server:
        stats = fetch(server.url + BIG, dest, **FAST)
        log = gets(server)
    assert same(dest, BIG)  # not the first half glued to the whole file
    assert log == [(None, 200, "cut"), (f"bytes={size // 2}-", 200, None)]
    assert stats.resumes == 0 and stats.restarts == 1 and stats.bytes == size + size // 2


def test_a_file_that_changed_between_attempts_is_fetched_again_whole(mirror, tmp_path):
    """If-Range carries the first reply's ETag; the new version comes back whole, not glued on."""
    dest = tmp_path / SMALL
    new = (WEB / BIG).read_bytes()

    def change_the_file(_seconds):
        (mirror / SMALL).write_bytes(new)

    with FaultServer(mirror, script={1: "cut"}) as server:
        stats = fetch(server.url + SMALL, dest, sleep=change_the_file, **FAST)
        second = server.requests()[1]
    assert open(dest, "rb").read() == new
    assert second.range and second.if_range and second.status == 200
    assert stats.restarts == 1 and stats.resumes == 0


def test_corrupt_gzip_is_detected_and_downloaded_again(mirror, tmp_path):
    dest = tmp_path / SMALL
    with FaultServer(mirror, script={1: "corrupt"}) as server:
        stats = fetch(server.url + SMALL, dest, **FAST)
        log = gets(server)
    assert same(dest, SMALL)
    assert log == [(None, 200, "corrupt"), (None, 200, None)]  # from scratch, not resumed
    assert stats.failures == {"bad_gzip": 1} and stats.restarts == 1 and stats.retries == 1


def test_a_whole_part_file_left_by_an_interrupted_fetch_is_finished_without_a_body(mirror, tmp_path):
    """The bytes all arrived but validation/rename never ran: the server answers 416, the file is done."""
    dest = tmp_path / SMALL
    shutil.copy(WEB / SMALL, f"{dest}.part")
    with FaultServer(mirror) as server:
        stats = fetch(server.url + SMALL, dest, **FAST)
        log = gets(server)
    size = os.path.getsize(WEB / SMALL)
    assert log == [(f"bytes={size}-", 416, None)]
    assert same(dest, SMALL) and stats.downloads == 1 and stats.bytes == 0


def test_a_plain_file_is_checked_by_size_and_resumed(mirror, tmp_path):
    dest = tmp_path / "notes.txt"
    with FaultServer(mirror, script={1: "cut"}) as server:
        stats = fetch(server.url + "notes.txt", dest, **FAST)
    assert dest.read_bytes() == (mirror / "notes.txt").read_bytes()
    assert stats.resumes == 1


# --------------------------------------------------------------------------------------------------
# Giving up: nothing half-done ever reaches dest


def test_gives_up_after_the_retries_with_one_clear_line(mirror, tmp_path):
    dest = tmp_path / SMALL
    pauses: list[float] = []
    with FaultServer(mirror, every=1, faults=("500",)) as server:
        with pytest.raises(DownloadError) as err:
            fetch(server.url + SMALL, dest, retries=3, backoff_s=0.2, max_backoff_s=0.5, sleep=pauses.append)
        assert len(server.requests()) == 4
    message = str(err.value)
    assert "\n" not in message and message.startswith(server.url + SMALL)
    assert "gave up after 4 attempts" in message and "http_500 x4" in message
    assert err.value.reason == "http_500"
    assert not dest.exists()
    # exponential, jittered into [half, full], capped at max_backoff_s
    for pause, full in zip(pauses, (0.2, 0.4, 0.5), strict=True):
        assert full / 2 <= pause <= full


def test_a_file_cut_on_every_try_never_reaches_dest_and_a_later_fetch_resumes_it(mirror, tmp_path):
    dest = tmp_path / BIG
    size = os.path.getsize(WEB / BIG)
    with FaultServer(mirror, every=1, faults=("cut",)) as server:
        with pytest.raises(DownloadError, match="gave up after 3 attempts"):
            fetch(server.url + BIG, dest, retries=2, **{k: v for k, v in FAST.items()})
        ranges = [r for r, _, _ in gets(server)]
    assert not dest.exists()
    have = os.path.getsize(f"{dest}.part")
    # each try got half of what was left: 1/2, 3/4, 7/8 of the file
    assert ranges == [None, f"bytes={size // 2}-", f"bytes={size // 2 + (size - size // 2) // 2}-"]
    assert size * 7 // 8 - 2 <= have < size
    with FaultServer(mirror) as server:
        stats = fetch(server.url + BIG, dest, **FAST)
        assert gets(server) == [(f"bytes={have}-", 206, None)]
    assert same(dest, BIG) and stats.resumes == 1 and stats.bytes == size - have
    assert not os.path.exists(f"{dest}.part")


def test_a_truncated_gzip_at_the_source_never_reaches_dest(mirror, tmp_path):
    dest = tmp_path / "truncated.warc.gz"
    with FaultServer(mirror) as server:
        with pytest.raises(DownloadError, match="truncated: the file ends inside gzip member") as err:
            fetch(server.url + "truncated.warc.gz", dest, retries=2, **FAST)
        assert len(server.requests()) == 3  # each attempt from scratch
    assert err.value.reason == "bad_gzip"
    assert not dest.exists() and not os.path.exists(f"{dest}.part")


def test_a_gz_name_that_is_not_gzip_is_refused(mirror, tmp_path):
    dest = tmp_path / "plain.warc.gz"
    with FaultServer(mirror) as server, pytest.raises(DownloadError, match="not a gzip file") as err:
        fetch(server.url + "plain.warc.gz", dest, retries=1, **FAST)
    assert err.value.reason == "not_gzip" and not dest.exists()


def test_not_found_is_permanent(mirror, tmp_path):
    dest = tmp_path / "missing.warc.gz"
    with FaultServer(mirror) as server:
        with pytest.raises(DownloadError, match=r"not found \(HTTP 404\)") as err:
            fetch(server.url + "missing.warc.gz", dest, **FAST)
        assert len(server.requests()) == 1  # no retry
    assert err.value.reason == "http_404" and not dest.exists()


def test_connection_refused_is_retried_then_reported(tmp_path):
    with FaultServer(tmp_path) as server:
        url = server.url + SMALL
    with pytest.raises(DownloadError, match="gave up after 2 attempts") as err:
        fetch(url, tmp_path / "x" / SMALL, retries=1, **FAST)
    assert err.value.reason == "connect"


# --------------------------------------------------------------------------------------------------
# Concurrency, file:// and s3://


def test_concurrent_fetches_of_one_file_download_it_once(mirror, tmp_path):
    dest = tmp_path / BIG
    results: list[FetchStats] = []
    with FaultServer(mirror) as server:
        threads = [threading.Thread(target=lambda: results.append(fetch(server.url + BIG, dest, **FAST)))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(server.requests()) == 1
    assert same(dest, BIG)
    assert sorted((s.downloads, s.cache_hits) for s in results) == [(0, 1), (0, 1), (0, 1), (1, 0)]


def test_file_urls_are_copied_and_validated(mirror, tmp_path):
    stats = fetch((mirror / SMALL).as_uri(), tmp_path / "c" / SMALL, **FAST)
    assert same(tmp_path / "c" / SMALL, SMALL) and stats.downloads == 1
    with pytest.raises(DownloadError, match="corrupt gzip") as err:
        fetch((mirror / "truncated.warc.gz").as_uri(), tmp_path / "c" / "t.warc.gz", retries=1, **FAST)
    assert err.value.reason == "bad_gzip" and not (tmp_path / "c" / "t.warc.gz").exists()
    with pytest.raises(DownloadError, match="not found") as err:
        fetch((mirror / "nope.warc.gz").as_uri(), tmp_path / "c" / "n.warc.gz", **FAST)
    assert err.value.reason == "not_found"


def test_s3_urls_resume_through_pyarrow(mirror, tmp_path):
    """pyarrow's S3 client in path style against the loopback server (offline): a cut read resumes."""
    bucket = mirror / "commoncrawl" / "crawl-data"
    bucket.mkdir(parents=True)
    shutil.copy(WEB / BIG, bucket / BIG)
    dest = tmp_path / BIG
    with FaultServer(mirror, script={2: "cut"}) as server:
        s3 = S3Options(endpoint=f"http://127.0.0.1:{server.port}", region="us-east-1", anonymous=True)
        stats = fetch(f"s3a://commoncrawl/crawl-data/{BIG}", dest, s3=s3, **FAST)
        ranges = [r for r, _, _ in gets(server)]
    assert same(dest, BIG)
    assert stats.failures == {"s3": 1} and stats.resumes == 1
    assert ranges[0] == f"bytes=0-{2**20 - 1}"  # 1 MiB reads; the second one is cut
    assert ranges[2].startswith(f"bytes={2**20}-")  # the retry starts after the part already kept


def test_http_goes_through_the_proxy_the_environment_names(mirror, tmp_path, monkeypatch):
    """The fault server as a forward proxy: a host that does not exist is reached through it."""
    with FaultServer(mirror, script={1: "cut"}) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        stats = fetch(f"http://crawl.example.invalid/{SMALL}", tmp_path / SMALL, **FAST)
        assert [(r.path, r.range) for r in proxy.requests()] == [
            (f"/{SMALL}", None), (f"/{SMALL}", f"bytes={os.path.getsize(WEB / SMALL) // 2}-")]
        monkeypatch.setenv("no_proxy", "example.invalid")
        with pytest.raises(DownloadError) as err:
            fetch(f"http://crawl.example.invalid/{SMALL}", tmp_path / "direct" / SMALL, retries=0, **FAST)
        assert err.value.reason == "connect" and len(proxy.requests()) == 2
    assert same(tmp_path / SMALL, SMALL) and stats.resumes == 1


def test_unsupported_scheme(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        fetch("ftp://example.org/a.warc.gz", tmp_path / "a.warc.gz")


# --------------------------------------------------------------------------------------------------
# The pieces


def test_gzip_problem_checks_every_member_and_the_end(tmp_path):
    members = [gzip.compress(f"record {i}\n".encode() * 50) for i in range(3)]
    good = tmp_path / "good.gz"
    good.write_bytes(b"".join(members))
    assert gzip_problem(good) is None
    assert gzip_problem(good, block=7) is None  # members split across reads
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"".join(members) + b"\0" * 10)
    end = len(b"".join(members))
    assert gzip_problem(garbage) == f"10 bytes of garbage after gzip member 3 (at byte {end})"
    cut = tmp_path / "cut.gz"
    cut.write_bytes(b"".join(members)[:-5])
    assert gzip_problem(cut).startswith("truncated: the file ends inside gzip member 3")
    bad_crc = bytearray(b"".join(members))
    bad_crc[len(members[0]) - 6] ^= 0xFF  # inside the first member's CRC-32
    (tmp_path / "crc.gz").write_bytes(bytes(bad_crc))
    assert "gzip member 1 (at byte 0)" in gzip_problem(tmp_path / "crc.gz")
    assert gzip_problem(WEB / BIG) is None
    d = zlib.compressobj(wbits=31)
    (tmp_path / "one.gz").write_bytes(d.compress(b"x" * 10) + d.flush())
    assert gzip_problem(tmp_path / "one.gz") is None


def test_backoff_is_exponential_jittered_and_bounded():
    import random

    rng = random.Random(0)
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (7, 30.0), (20, 30.0)):
        for _ in range(20):
            assert full / 2 <= backoff_delay(attempt, 1.0, 30.0, rng) <= full
