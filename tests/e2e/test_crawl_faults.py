"""Crawl ingestion under faults: one request in five fails, is cut or stalls, and the shards do not change.

A loopback server mirrors a small crawl built from the real WARCs of the corpus (the four page files
split at gzip-member boundaries into three pieces each, plus the CommonCrawl sample: 13 WARCs). The same
pipeline (``commoncrawl`` + ``extract``) runs twice on the test session's Spark: against the server with
every fifth request a fault (a 500, a connection cut half-way, a stall longer than the client's
timeout), and against a server without faults. Every WARC must arrive whole and the shards must be
byte-identical.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import WEB
from tests.e2e.helpers import shard_digests
from tests.faultserver import FaultServer

CRAWL = "CC-TEST-2024"
PIECES = 3


def member_starts(data: bytes) -> list[int]:
    """Offsets of the gzip members of a file gzipped record by record."""
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        assert d.eof
        pos = len(data) - len(d.unused_data)
    return starts


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The mirror folder and {listed path: sha256} of its WARCs."""
    root = tmp_path_factory.mktemp("crawl-mirror")
    files: dict[str, bytes] = {}
    for k, original in enumerate(sorted(WEB.glob("eval-pages-0000*.warc.gz"))):
        data = original.read_bytes()
        starts = member_starts(data)
        cuts = [starts[len(starts) * i // PIECES] for i in range(PIECES)] + [len(data)]
        for i in range(PIECES):
            name = f"crawl-data/{CRAWL}/segments/171600000000{k}.1{i}/warc/{original.stem[:-5]}-{i}.warc.gz"
            files[name] = data[cuts[i]:cuts[i + 1]]
    files[f"crawl-data/{CRAWL}/segments/1716000000009.99/warc/cc-2020-08-sample.warc.gz"] = \
        (WEB / "cc-2020-08-sample.warc.gz").read_bytes()
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    with gzip.open(root / "crawl-data" / CRAWL / "warc.paths.gz", "wt") as fh:
        fh.write("".join(f"{name}\n" for name in files))
    return root, {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def pipeline(tmp: Path, tag: str, base_url: str) -> Path:
    path = tmp / f"{tag}.yaml"
    path.write_text(f"""\
name: crawl-{tag}
sources:
  web:
    read:
      commoncrawl:
        crawl: {CRAWL}
        base_url: "{base_url}"
        cache_dir: "{tmp / f'cache-{tag}'}"
        retries: 6
        timeout_s: 1.5
        backoff_s: 0.05
        max_backoff_s: 0.5
    steps:
      - extract: {{engine: trafilatura, favor_precision: true, include_comments: false}}
output: {{path: "{tmp / f'out-{tag}'}"}}
""")
    return path


def cached_digests(cache: Path) -> dict[str, str]:
    return {str(p.relative_to(cache)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in cache.rglob("*.warc.gz")}


def test_shards_under_faults_equal_those_without(crawl, tmp_path, spark):
    from pipelines import runner
    from pipelines import spec as specmod

    def run_pipeline(yaml: str, out: Path) -> dict:
        return runner.run(specmod.load(yaml), str(out), spark=spark, progress=False)

    root, originals = crawl
    with FaultServer(root, every=5, faults=("cut", "500", "stall"), stall_s=10) as server:
        faulty = run_pipeline(str(pipeline(tmp_path, "faults", server.url)), tmp_path / "out-faults")
        served = server.faults_served()
        warc_faults = sum(1 for r in server.requests(".warc.gz") if r.fault)
        resumed = [r for r in server.requests(".warc.gz") if r.range]
        n_requests = len(server.requests())
    with FaultServer(root) as server:
        clean = run_pipeline(str(pipeline(tmp_path, "clean", server.url)), tmp_path / "out-clean")
        assert server.faults_served() == {}
        assert len(server.requests(".warc.gz")) == len(originals)  # one request per file, no retry

    # one request in five was a fault, of every kind, and the client worked around each of them
    kinds = ("cut", "500", "stall")
    assert n_requests >= 15
    assert served == dict(Counter(kinds[(k - 1) % 3] for k in range(1, n_requests // 5 + 1)))
    assert resumed and all(r.status == 206 for r in resumed if r.fault is None)
    reader = faulty["sources"]["web"]["reader"]["counters"]
    assert reader["download_files"] == len(originals) and "download_given_up" not in reader
    assert reader["download_retries"] == warc_faults >= 2
    assert reader["download_resumes"] == sum(1 for r in resumed if r.status == 206)
    assert faulty["sources"]["web"]["errors"] == []

    # every WARC arrived whole, in both caches
    assert cached_digests(tmp_path / "cache-faults") == originals
    assert cached_digests(tmp_path / "cache-clean") == originals
    assert not list((tmp_path / "cache-faults").rglob("*.part"))

    # and the shards are byte-identical
    assert faulty["rows_read"] == clean["rows_read"] == 693 + 16
    assert faulty["rows_kept"] == clean["rows_kept"] > 600
    assert shard_digests(tmp_path / "out-faults") == shard_digests(tmp_path / "out-clean")
    manifests = [json.loads((tmp_path / out / "manifest.json").read_text()) for out in ("out-faults", "out-clean")]
    assert [s["input"] for s in manifests[0]["shards"]] == [s["input"] for s in manifests[1]["shards"]] \
        == list(originals)
    clean_counters = clean["sources"]["web"]["reader"]["counters"]
    assert {k: v for k, v in reader.items() if not k.startswith("download_")} == \
        {k: v for k, v in clean_counters.items() if not k.startswith("download_")}
    assert "download_retries" not in clean_counters
