"""The commoncrawl reader: listing and selection on the real CC-MAIN-2024-22 listing (no network), and
reading through a loopback mirror that fails on cue, compared row for row with the warc reader."""

from __future__ import annotations

import gzip
import shutil

import pyarrow as pa
import pytest
from pydantic import ValidationError

from operators import registry
from operators.base import InputFile, TaskContext
from operators.readers.commoncrawl import CommonCrawlParams, CommonCrawlReader, SelectionError
from operators.readers.warc import SCHEMA, WarcParams, WarcReader
from pipelines.spec import load_text
from tests.conftest import WEB
from tests.faultserver import FaultServer

LISTING = WEB / "CC-MAIN-2024-22.warc.paths.gz"
CRAWL = "CC-TEST-2024"
ORIGINALS = [*sorted(WEB.glob("eval-pages-0000*.warc.gz")), WEB / "cc-2020-08-sample.warc.gz"]
FAST = {"timeout_s": 1.0, "backoff_s": 0.01, "max_backoff_s": 0.05}


def real_lines() -> list[str]:
    with gzip.open(LISTING, "rt") as fh:
        return [line.strip() for line in fh if line.strip()]


def real(**params) -> CommonCrawlReader:
    return CommonCrawlReader(CommonCrawlParams(crawl="CC-MAIN-2024-22", paths_file=str(LISTING), **params))


def crawl_path(original) -> str:
    segment = "1716000000000.11" if original.name.startswith("eval") else "1716000000000.22"
    return f"crawl-data/{CRAWL}/segments/{segment}/warc/{original.name}"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """``<root>/crawl-data/CC-TEST-2024/{warc.paths.gz, segments/.../warc/*.warc.gz}``: copies of the corpus."""
    root = tmp_path_factory.mktemp("mirror")
    names = []
    for original in ORIGINALS:
        dest = root / crawl_path(original)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(original, dest)
        names.append(crawl_path(original))
    with gzip.open(root / "crawl-data" / CRAWL / "warc.paths.gz", "wt") as fh:
        fh.write("".join(f"{n}\n" for n in names))
    return root


def rows_of(reader, ctx: TaskContext) -> pa.Table:
    return pa.Table.from_batches(list(reader.read(ctx, 100)), schema=SCHEMA)


def warc_rows(original, name: str) -> pa.Table:
    ctx = TaskContext(source="web", input=InputFile(0, str(original), name))
    return rows_of(WarcReader(WarcParams(paths=str(original))), ctx)


# --------------------------------------------------------------------------------------------------
# Listing and selection on the real listing


def test_registered_and_produces_the_warc_columns():
    assert registry.reader("commoncrawl") is CommonCrawlReader
    assert CommonCrawlReader.produces == WarcReader.produces


def test_max_files_keeps_the_first_files_of_the_crawl():
    lines = real_lines()
    assert len(lines) == 300
    inputs = real(max_files=5).list_inputs()
    assert [f.name for f in inputs] == lines[:5]
    assert [f.path for f in inputs] == ["https://data.commoncrawl.org/" + n for n in lines[:5]]
    assert [f.index for f in inputs] == list(range(5))
    assert len(real().list_inputs()) == 300


def test_files_pick_by_line_number_exact_path_and_glob_in_listing_order():
    lines = real_lines()
    inputs = real(files=[17, lines[3], "part-0029[89]-*", 3]).list_inputs()
    assert [f.name for f in inputs] == [lines[3], lines[17], lines[298], lines[299]]
    assert [f.name for f in real(files=["part-002*"], max_files=2).list_inputs()] == lines[200:202]
    mirror_of = real(files=[0], base_url="http://mirror.example/cc").list_inputs()[0]
    assert mirror_of.path == "http://mirror.example/cc/" + lines[0] and mirror_of.name == lines[0]


def test_a_file_not_in_the_crawl_is_a_one_line_error():
    lines = real_lines()
    typo = lines[7].replace("parquet", "parqet")
    with pytest.raises(FileNotFoundError) as err:
        real(files=[lines[1], typo]).list_inputs()
    message = str(err.value)
    assert "\n" not in message and err.value.key == "files[1]"
    assert message == (f"files[1]: '{typo}' is not in the crawl CC-MAIN-2024-22 (listing {LISTING}); "
                       f"did you mean '{lines[7]}'?")
    with pytest.raises(SelectionError, match=r"files\[0\]: line 300 is past the end .* \(300 files, numbered from 0\)"):
        real(files=[300]).list_inputs()
    with pytest.raises(SelectionError, match=r"files\[1\]: no file of the crawl CC-MAIN-2024-22 .* matches '\*.warc.gz'"):
        real(files=[0, "*.warc.gz"]).list_inputs()


def test_params_are_checked():
    with pytest.raises(ValidationError, match="extra"):
        CommonCrawlParams(crawl="CC-MAIN-2024-22", path="x")
    with pytest.raises(ValidationError, match="not a crawl name"):
        CommonCrawlParams(crawl="../CC-MAIN-2024-22")
    with pytest.raises(ValidationError, match="unsupported scheme 'ftp'"):
        CommonCrawlParams(crawl="CC-MAIN-2024-22", base_url="ftp://x/")
    with pytest.raises(ValidationError, match="0 or more"):
        CommonCrawlParams(crawl="CC-MAIN-2024-22", files=[-1])
    with pytest.raises(ValidationError):
        CommonCrawlParams(crawl="CC-MAIN-2024-22", files=[])
    assert CommonCrawlParams(crawl="C", base_url="s3://commoncrawl").base_url == "s3://commoncrawl/"


def test_the_yaml_names_a_commoncrawl_source():
    spec = load_text("name: cc\nsources:\n  web:\n    read: {commoncrawl: {crawl: CC-MAIN-2024-22, max_files: 2}}\n"
                     "    steps: [extract]\n")
    read = spec.sources["web"].read
    assert read.name == "commoncrawl" and read.params.max_files == 2


def test_a_missing_or_unsafe_listing_is_an_error(tmp_path):
    with pytest.raises(SelectionError, match="the listing of CC-MAIN-2024-22 does not exist") as err:
        CommonCrawlReader(CommonCrawlParams(crawl="CC-MAIN-2024-22", base_url=str(tmp_path))).list_inputs()
    assert err.value.key == "paths_file"
    bad = tmp_path / "bad.paths"
    bad.write_text("crawl-data/a.warc.gz\n../../etc/passwd\n")
    with pytest.raises(SelectionError, match=r"line 2: '../../etc/passwd' is not a relative path"):
        CommonCrawlReader(CommonCrawlParams(crawl="X", paths_file=str(bad))).list_inputs()


# --------------------------------------------------------------------------------------------------
# Reading through a mirror


def test_the_default_listing_is_found_under_the_base_url(mirror, tmp_path):
    expected = [crawl_path(o) for o in ORIGINALS]
    for base in (str(mirror), mirror.as_uri()):
        inputs = CommonCrawlReader(CommonCrawlParams(crawl=CRAWL, base_url=base)).list_inputs()
        assert [f.name for f in inputs] == expected
        assert inputs[0].path == mirror.as_uri() + "/" + expected[0]
    with FaultServer(mirror, script={1: "cut"}) as server:
        reader = CommonCrawlReader(CommonCrawlParams(crawl=CRAWL, base_url=server.url, cache_dir=str(tmp_path), **FAST))
        assert [f.name for f in reader.list_inputs()] == expected
        assert [f.name for f in reader.list_inputs()] == expected  # the second time from the cache
        assert [(r.path, r.fault) for r in server.requests()] == [
            (f"/crawl-data/{CRAWL}/warc.paths.gz", "cut"), (f"/crawl-data/{CRAWL}/warc.paths.gz", None)]
    (tmp_path / "empty-mirror").mkdir()
    with FaultServer(tmp_path / "empty-mirror") as server:
        reader = CommonCrawlReader(CommonCrawlParams(crawl=CRAWL, base_url=server.url, cache_dir=str(tmp_path), **FAST))
        with pytest.raises(SelectionError, match=f"cannot fetch the listing of {CRAWL}: .*not found"):
            reader.list_inputs()


def test_rows_equal_the_warc_readers_through_a_faulty_server(mirror, tmp_path):
    with FaultServer(mirror, every=2, faults=("cut", "500", "stall", "corrupt"), stall_s=5) as server:
        reader = CommonCrawlReader(CommonCrawlParams(crawl=CRAWL, base_url=server.url, cache_dir=str(tmp_path),
                                                     retries=4, **FAST))
        inputs = reader.list_inputs()
        totals: dict[str, int] = {}
        for f, original in zip(inputs, ORIGINALS, strict=True):
            ctx = TaskContext(source="web", input=f)
            got = rows_of(reader, ctx)
            want = warc_rows(original, f.name)
            assert got.num_rows == want.num_rows > 0
            assert got.equals(want), f.name
            assert ctx.errors == []
            assert ctx.counters["download_files"] == 1
            assert ctx.counters["records_html"] == want.num_rows
            for k, v in ctx.counters.items():
                if k.startswith("download_"):
                    totals[k] = totals.get(k, 0) + v
            assert (tmp_path / f.name).read_bytes() == original.read_bytes()
        served = server.faults_served()
        ranged = [r for r in server.requests() if r.range]
    assert set(served) == {"cut", "500", "stall", "corrupt"}
    assert totals["download_retries"] == sum(served.values())
    assert totals["download_resumes"] >= 1 and all(r.status == 206 for r in ranged)
    assert {"download_failed_cut", "download_failed_http_500", "download_failed_timeout",
            "download_failed_bad_gzip"} <= set(totals)


def test_a_cached_file_is_read_without_a_request(mirror, tmp_path):
    with FaultServer(mirror) as server:
        reader = CommonCrawlReader(CommonCrawlParams(crawl=CRAWL, base_url=server.url, cache_dir=str(tmp_path),
                                                     files=["*/cc-2020-08-sample.warc.gz"], **FAST))
        (f,) = reader.list_inputs()
        first = TaskContext(source="web", input=f)
        a = rows_of(reader, first)
        n = len(server.requests())
        second = TaskContext(source="web", input=f)
        b = rows_of(reader, second)
        assert len(server.requests()) == n
    assert a.equals(b) and a.num_rows == 16
    assert second.counters["download_cache_hits"] == 1 and "download_files" not in second.counters


def test_keep_files_false_deletes_a_file_once_read(mirror, tmp_path):
    reader = CommonCrawlReader(CommonCrawlParams(crawl=CRAWL, base_url=mirror.as_uri(), cache_dir=str(tmp_path),
                                                 files=["*/cc-2020-08-sample.warc.gz"], keep_files=False))
    (f,) = reader.list_inputs()
    batches = reader.read(TaskContext(source="web", input=f), 10)
    assert next(batches).num_rows == 10
    assert (tmp_path / f.name).is_file()  # still being read
    assert sum(b.num_rows for b in batches) == 6
    assert not (tmp_path / f.name).exists()


def test_a_file_that_cannot_be_fetched_is_one_error_and_no_rows(mirror, tmp_path):
    listing = tmp_path / "warc.paths"
    listing.write_text(f"{crawl_path(ORIGINALS[-1])}\ncrawl-data/{CRAWL}/segments/x/warc/gone.warc.gz\n")
    with FaultServer(mirror) as server:
        reader = CommonCrawlReader(CommonCrawlParams(crawl=CRAWL, base_url=server.url, paths_file=str(listing),
                                                     cache_dir=str(tmp_path / "cache"), **FAST))
        gone = reader.list_inputs()[1]
        ctx = TaskContext(source="web", input=gone)
        assert rows_of(reader, ctx).num_rows == 0
    assert len(ctx.errors) == 1
    assert ctx.errors[0]["file"] == gone.path == server.url + gone.name
    assert ctx.errors[0]["error"] == f"download failed: {gone.path}: not found (HTTP 404)"
    assert ctx.counters == {"download_given_up": 1, "download_failed_http_404": 1}
    assert not (tmp_path / "cache" / gone.name).exists()


def test_damage_inside_a_warc_is_reported_under_its_url(tmp_path):
    root = tmp_path / "m"
    name = f"crawl-data/{CRAWL}/segments/9/warc/example-wget-bad-target-uri.warc.gz"
    (root / name).parent.mkdir(parents=True)
    shutil.copy(WEB / "broken" / "example-wget-bad-target-uri.warc.gz", root / name)
    (root / "crawl-data" / CRAWL / "warc.paths").write_text(name + "\n")
    reader = CommonCrawlReader(CommonCrawlParams(crawl=CRAWL, base_url=root.as_uri(), cache_dir=str(tmp_path / "c"),
                                                 paths_file=str(root / "crawl-data" / CRAWL / "warc.paths")))
    (f,) = reader.list_inputs()
    ctx = TaskContext(source="web", input=f)
    table = rows_of(reader, ctx)
    want_ctx = TaskContext(source="web", input=InputFile(0, str(root / name), name))
    want = rows_of(WarcReader(WarcParams(paths=str(root / name))), want_ctx)
    assert table.equals(want) and table.num_rows == 1
    assert [e["file"] for e in ctx.errors] == [f.path] and f.path.startswith("file://")
    assert [e["error"] for e in ctx.errors] == [e["error"] for e in want_ctx.errors]
