"""The one map from YAML names to operator classes.

Entries are ``"module:Class"`` strings imported on first use, so validating a pipeline never pays for
importing an extractor or a model it does not name.
"""

from __future__ import annotations

import importlib
from typing import Any

#: readers: one ``read:`` per source
READERS: dict[str, str] = {
    "warc": "operators.readers.warc:WarcReader",
    "jsonl": "operators.readers.text:JsonlReader",
    "parquet": "operators.readers.text:ParquetReader",
    "commoncrawl": "operators.readers.commoncrawl:CommonCrawlReader",
    "source_tree": "operators.readers.source_tree:SourceTreeReader",
    "text_files": "operators.readers.books:TextFilesReader",
}

#: row steps: run fused, batch by batch, inside one Arrow pass per source
ROW_STEPS: dict[str, str] = {
    "extract": "operators.extract:Extract",
    "url_filter": "operators.filters.url:UrlFilter",
    "langid": "operators.langid:LangId",
    "gopher_repetition": "operators.filters.heuristic:GopherRepetition",
    "gopher_quality": "operators.filters.heuristic:GopherQuality",
    "c4_quality": "operators.filters.heuristic:C4Quality",
    "fineweb_quality": "operators.filters.heuristic:FineWebQuality",
    "pii": "operators.pii:Pii",
    "decontaminate": "operators.filters.decontaminate:Decontaminate",
    "code_quality": "operators.filters.code:CodeQuality",
    "quality_classifier": "operators.quality:QualityClassifier",
}

#: global steps: run on the union of the sources as Spark DataFrames (may shuffle)
GLOBAL_STEPS: dict[str, str] = {
    "exact_dedup": "operators.dedup.exact:ExactDedup",
    "minhash_dedup": "operators.dedup.near:MinhashDedup",
}

_cache: dict[str, Any] = {}


def load(ref: str) -> Any:
    """Import ``module:Class`` once."""
    if ref not in _cache:
        module, _, attr = ref.partition(":")
        _cache[ref] = getattr(importlib.import_module(module), attr)
    return _cache[ref]


def reader(name: str) -> Any:
    return load(READERS[name])


def row_step(name: str) -> Any:
    return load(ROW_STEPS[name])


def global_step(name: str) -> Any:
    return load(GLOBAL_STEPS[name])
