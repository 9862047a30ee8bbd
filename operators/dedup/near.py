"""``minhash_dedup``: near-duplicate removal with MinHash LSH, as Spark stages end to end.

1. **Signatures** in a narrow ``mapInArrow`` where the documents lie: FineWeb's normalization, word
   5-grams, ``bands x rows`` permutations exactly as datasketch draws them
   (:mod:`operators.dedup.minhash`), one 64-bit key per band. Documents with fewer than ``ngram`` words
   take no part (as in FineWeb). Only (id, keys, length, quality[, signature]) leaves the task.
2. **Buckets**: one row per (band key, document), grouped with a shuffle; in every bucket with more
   than one document, an edge from each member to the bucket's smallest id (a star, not all pairs).
   ``scope: source`` adds the source to the key, so documents of different sources never meet.
3. **Verification** (``verify: true``): an edge survives only when the two signatures agree on at least
   ``verify_threshold`` of their values (the MinHash estimate of their Jaccard similarity), which cuts
   the pairs that shared one band by chance.
4. **Components**: Large-Star / Small-Star on DataFrames (:mod:`operators.dedup.components`),
   checkpointed every few rounds.
5. **One survivor per component** by ``keep`` (``first`` in input order, ``longest``,
   ``highest_quality`` by ``quality_score``); the others are removed with reason ``near_duplicate``,
   ``dup_of`` = the survivor's id and ``detail`` = the component (its smallest id) and its size.

``stats``: bands and rows, documents signed and skipped, candidate and verified edges, component
rounds, clusters, the cluster-size histogram, the largest clusters with a sample of their members.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from operators.base import GlobalStep, Params
from operators.dedup.exact import keep_order, source_rank


class MinhashDedupParams(Params):
    #: word n-grams (shingles)
    ngram: int = Field(default=5, ge=1)
    bands: int = Field(default=14, ge=1)
    rows: int = Field(default=8, ge=1)
    #: instead of bands x rows: the Jaccard threshold to tune them for (datasketch's optimal_param)
    threshold: float | None = Field(default=None, gt=0, lt=1)
    #: permutations available when ``threshold`` picks bands and rows
    num_perm: int = Field(default=112, ge=2)
    seed: int = 1
    scope: Literal["source", "global"] = "global"
    verify: bool = False
    #: with verify: the least share of equal signature values (estimated Jaccard) an edge needs
    verify_threshold: float = Field(default=0.7, gt=0, le=1)
    keep: Literal["first", "longest", "highest_quality"] = "first"
    #: how many members of each of the largest clusters stats.json shows
    sample_members: int = Field(default=5, ge=0)

    @model_validator(mode="after")
    def _shape(self) -> MinhashDedupParams:
        if self.threshold is None and self.bands * self.rows > 1024:
            raise ValueError(f"{self.bands} bands x {self.rows} rows: at most 1024 permutations")
        return self

    def band_shape(self) -> tuple[int, int]:
        if self.threshold is None:
            return self.bands, self.rows
        from operators.dedup.minhash import optimal_param

        return optimal_param(self.threshold, self.num_perm)


class MinhashDedup(GlobalStep):
    """Removes near-duplicate documents (MinHash LSH + connected components), keeping one per cluster."""

    name = "minhash_dedup"
    Params = MinhashDedupParams
    reads = ("text",)
    optional_reads = ("quality_score", "url", "path")

    def apply(self, docs):
        from pyspark.sql import functions as F
        from pyspark.sql.window import Window

        from operators.dedup.components import components_stats, connected_components_with_info

        p: MinhashDedupParams = self.params
        bands, rows = p.band_shape()
        has_quality = "quality_score" in docs.columns
        where = "url" if "url" in docs.columns else ("path" if "path" in docs.columns else None)

        def sign(batches, bands=bands, rows=rows, ngram=p.ngram, seed=p.seed, verify=p.verify):
            from operators.dedup.minhash import MinHasher, band_hashes

            hasher = MinHasher(num_perm=bands * rows, seed=seed, ngram=ngram)
            for b in batches:
                texts = b.column("text").to_pylist()
                sigs, n_words = hasher.signatures(texts, return_num_words=True)
                keys = band_hashes(sigs, bands, rows).view(np.int64)
                ok = n_words >= ngram
                n = b.num_rows
                cols = {
                    "id": b.column("id"), "source": b.column("source"), "part": b.column("part"),
                    "signed": pa.array(ok),
                    "keys": pa.array([k.tolist() if o else None for k, o in zip(keys, ok, strict=True)],
                                     pa.list_(pa.int64())),
                    "length": pa.array([len(t) if t else 0 for t in texts], pa.int64()),
                    "quality": (b.column("quality_score").cast(pa.float64()) if has_quality
                                else pa.nulls(n, pa.float64())),
                    "where": (b.column(where).cast(pa.string()) if where else pa.nulls(n, pa.string())),
                }
                if verify:
                    cols["sig"] = pa.array([s.tobytes() if o else None for s, o in zip(sigs, ok, strict=True)],
                                           pa.binary())
                yield pa.RecordBatch.from_pydict(cols)

        schema = ("id string, source string, part int, signed boolean, keys array<bigint>, length bigint, "
                  "quality double, `where` string" + (", sig binary" if p.verify else ""))
        signed = docs.mapInArrow(sign, schema).persist()
        counts = signed.groupBy("signed").count().collect()
        n_signed = sum(r["count"] for r in counts if r["signed"])
        n_skipped = sum(r["count"] for r in counts if not r["signed"])
        members = signed.where("signed").withColumn("rank", source_rank(self.source_order, F))

        bucket = F.posexplode("keys").alias("band", "key")
        pairs = members.select("id", "source", bucket)
        group = ["band", "key"] + (["source"] if p.scope == "source" else [])
        roots = (pairs.groupBy(*group).agg(F.min("id").alias("root"), F.count(F.lit(1)).alias("n"))
                 .where(F.col("n") > 1))
        edges = (pairs.join(roots, group).where(F.col("id") != F.col("root"))
                 .select(F.col("root").alias("src"), F.col("id").alias("dst")).distinct())
        if p.verify:
            sig = members.select("id", "sig")
            estimate = F.udf(_agreement, "double")
            edges = (edges.join(sig.withColumnRenamed("id", "src").withColumnRenamed("sig", "a"), "src")
                     .join(sig.withColumnRenamed("id", "dst").withColumnRenamed("sig", "b"), "dst")
                     .where(estimate("a", "b") >= p.verify_threshold).select("src", "dst"))
        edges = edges.persist()
        n_edges = edges.count()

        components, info = connected_components_with_info(edges)
        clusters = components.select(F.col("node").alias("id"), "component")
        ranked = clusters.join(members.select("id", "source", "part", "rank", "length", "quality", "where"), "id")
        w = Window.partitionBy("component").orderBy(*keep_order(p.keep, F))
        ranked = (ranked.withColumn("n", F.row_number().over(w))
                  .withColumn("survivor", F.first("id").over(w))
                  .withColumn("size", F.count(F.lit(1)).over(Window.partitionBy("component")))
                  .persist())
        removed = ranked.where(F.col("n") > 1).select(
            "id", "source", "part", F.lit("near_duplicate").alias("reason"),
            F.concat(F.lit("cluster "), F.col("component"), F.lit(" size "), F.col("size").cast("string"))
            .alias("detail"),
            F.col("survivor").alias("dup_of"))

        summary = components_stats(clusters)
        largest = [c["component"] for c in summary["largest"][:5]]
        samples: dict[str, list[dict]] = {}
        if largest and p.sample_members:
            sw = Window.partitionBy("component").orderBy("n")
            rows_ = (ranked.where(F.col("component").isin(largest))
                     .withColumn("k", F.row_number().over(sw)).where(F.col("k") <= p.sample_members)
                     .select("component", "id", "source", "where", "length", "n").collect())
            for r in rows_:
                samples.setdefault(r["component"], []).append(
                    {"id": r["id"], "source": r["source"], "where": r["where"], "length": r["length"],
                     "kept": r["n"] == 1})
        for c in summary["largest"]:
            c["members"] = sorted(samples.get(c["component"], []), key=lambda m: not m["kept"])
        self.stats = {
            "bands": bands, "rows": rows, "documents_signed": n_signed, "documents_too_short": n_skipped,
            "edges": n_edges, "component_rounds": info.rounds, **summary,
        }
        return removed


def _agreement(a, b):
    """The share of equal values of two uint32 signatures: MinHash's estimate of Jaccard similarity."""
    if a is None or b is None:
        return 0.0
    x = np.frombuffer(a, np.uint32)
    y = np.frombuffer(b, np.uint32)
    return float(np.count_nonzero(x == y)) / len(x)
