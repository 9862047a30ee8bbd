"""``exact_dedup``: one survivor per group of documents with the same (normalized) text or column.

The key is a 16-byte BLAKE2b digest of the column's value, computed where the rows lie (a narrow
``mapInArrow``: the text never crosses a shuffle); only (id, key, length, quality) is grouped. With
``normalize`` (default, text-like columns) the value is lowercased and its white-space runs collapsed
to one space, so re-flowed copies of a page count as the same text. Null and empty values are never
duplicates.

Which document survives a group (``keep``):

* ``first``: the first in input order: sources in YAML order, then input files, then id;
* ``longest``: the longest text (ties: ``first``);
* ``highest_quality``: the highest ``quality_score`` (documents without one come last; ties: ``first``).

The others are removed with reason ``exact_duplicate`` and ``dup_of`` = the survivor's id. ``stats``:
groups with more than one member, documents removed.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import pyarrow as pa

from operators.base import GlobalStep, Params

_WHITE = re.compile(r"\s+")


class ExactDedupParams(Params):
    column: str = "text"
    normalize: bool = True
    keep: Literal["first", "longest", "highest_quality"] = "first"


def exact_key(value: str | None, normalize: bool) -> bytes | None:
    if value is None:
        return None
    if normalize:
        value = _WHITE.sub(" ", value.lower()).strip()
    if not value:
        return None
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def source_rank(order: list[str], F):
    """A column: the source's position in the YAML (0 when the order is unknown)."""
    if not order:
        return F.lit(0)
    return F.create_map(*[x for i, s in enumerate(order) for x in (F.lit(s), F.lit(i))])[F.col("source")]


def keep_order(keep: str, F) -> list[Any]:
    """Window order that puts a group's survivor first (columns: rank, part, id, length, quality)."""
    first = [F.col("rank").asc(), F.col("part").asc(), F.col("id").asc()]
    if keep == "longest":
        return [F.col("length").desc(), *first]
    if keep == "highest_quality":
        return [F.col("quality").desc_nulls_last(), *first]
    return first


class ExactDedup(GlobalStep):
    """Removes documents whose normalized text (or ``column``) another document already has."""

    name = "exact_dedup"
    Params = ExactDedupParams
    optional_reads = ("quality_score",)

    def __init__(self, params: ExactDedupParams):
        super().__init__(params)
        self.reads = tuple(dict.fromkeys((params.column, "text")))

    def apply(self, docs):
        from pyspark.sql import functions as F
        from pyspark.sql.window import Window

        p: ExactDedupParams = self.params
        has_quality = "quality_score" in docs.columns
        def keys(batches, column=p.column, normalize=p.normalize, has_quality=has_quality):
            for b in batches:
                values = b.column(column).cast(pa.string()).to_pylist()
                text = b.column("text").to_pylist() if "text" in b.schema.names else [None] * b.num_rows
                yield pa.RecordBatch.from_pydict({
                    "id": b.column("id"), "source": b.column("source"), "part": b.column("part"),
                    "key": pa.array([exact_key(v, normalize) for v in values], pa.binary()),
                    "length": pa.array([len(t) if t else 0 for t in text], pa.int64()),
                    "quality": (b.column("quality_score").cast(pa.float64()) if has_quality
                                else pa.nulls(b.num_rows, pa.float64())),
                })

        keyed = (docs.mapInArrow(keys, "id string, source string, part int, key binary, length long, quality double")
                 .where(F.col("key").isNotNull()))
        keyed = keyed.withColumn("rank", source_rank(self.source_order, F))
        w = Window.partitionBy("key").orderBy(*keep_order(p.keep, F))
        ranked = (keyed.withColumn("n", F.row_number().over(w))
                  .withColumn("survivor", F.first("id").over(w))
                  .persist())
        removed = ranked.where(F.col("n") > 1).select(
            "id", "source", "part", F.lit("exact_duplicate").alias("reason"),
            F.lit(None).cast("string").alias("detail"), F.col("survivor").alias("dup_of"))
        self.stats = {"duplicate_groups": ranked.where(F.col("n") == 2).count()}
        return removed
