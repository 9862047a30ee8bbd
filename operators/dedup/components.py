"""Connected components of a graph given as a Spark DataFrame of edges (near-duplicate clustering).

The algorithm is the Large-Star / Small-Star alternation of Kiveris, Lattanzi, Mirrokni, Rastogi and
Vassilvitskii, "Connected Components in MapReduce and Beyond" (SoCC 2014), written with DataFrame
operations only (``explode``, ``repartition``, ``distinct``, ``min`` over windows, ``groupBy``):
nothing about the nodes or edges is collected on the driver, only two numbers per round.

Edges are undirected, stored oriented ``src < dst`` without self-loops. One *round* is:

* **Large-Star.** ``m(u)`` = the smallest of ``u`` and all its neighbours. Every edge ``(u, v)``,
  ``u < v``, becomes ``(m(u), v)``: each node's larger neighbours are hung on its neighbourhood's
  minimum.
* **Small-Star.** ``m'(u)`` = the smallest of ``u``'s smaller neighbours. Every edge ``(w, u)``,
  ``w < u``, becomes ``(m'(u), w)``, except ``(m'(u), u)`` itself, which stays: each node and its
  smaller neighbours are hung on their minimum.

A round costs two shuffles and no join (see :func:`_round`): the symmetrized edges are hash-partitioned
by node once, deduplicated and given each node's minimum in that partitioning; Small-Star is a window
over ``dst``. (A join formulation, ``groupBy(dst).min(src)`` joined back to the edges with a
``distinct`` after each star and a symmetric-difference job per round for convergence, took 17-19 s
where this takes 10-13 s: 100k nodes, 200k edges, local[2].)

Convergence. Each round rewrites every distinct edge into exactly one edge and flags the rows it
changed. Rounds repeat until a round changes no edge, i.e. leaves the edge set as it was; the check is
one count over the new edge set (``count(*)``, ``count(changed)``: one row to the driver), run as the
action that materializes it, so it costs no shuffle. No edge changes exactly when every ``src`` has no
smaller neighbour and every ``dst`` exactly one: every edge is ``(component minimum, node)``, a star
per component around its smallest id. ``rounds`` counts that last round. Observed: a 2,000-node path
needs 12 rounds (9-10 with its ids shuffled), a 200,001-node path 19, a 5,000- or 200,000-leaf star
whose centre is not the minimum 2, random sparse graphs of 3k-100k nodes 5.

Memory and lineage. Each round's edge set is persisted (memory and disk) and materialized by the
convergence check; the previous round's is unpersisted right after. Every ``checkpoint_every`` rounds
the edge set is checkpointed instead, which cuts the query plan (otherwise it grows every round, and
planning time with it):

* by default ``localCheckpoint(eager=True)``: blocks in the executors' block managers, no checkpoint
  directory needed, fast; but a lost executor loses them and the job fails (no recomputation). The
  previous local checkpoint's blocks are released as soon as a newer checkpoint exists.
* when ``spark.sparkContext.getCheckpointDir()`` is set (``sc.setCheckpointDir``; on a cluster a
  directory every executor reaches): the reliable ``checkpoint(eager=True)``, files in that directory,
  which survive executor loss. They stay there (Spark deletes them only with
  ``spark.cleaner.referenceTracking.cleanCheckpoints=true``).

The input is read once (checkpointed at the start), so an expensive upstream plan (candidate pairs
from MinHash bands) runs once, and the result is checkpointed the same way, so that it holds no cached
intermediate behind it: after a run the block managers hold the result and nothing else.

Skew. All the edges of one node go through one task (Large-Star: its neighbours; Small-Star: its
smaller neighbours), and at the fixpoint a component of k nodes is k edges on one node, so a giant
cluster makes one long task per round; the window buffers spill to disk, so it is slow, not fatal.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import IntegralType, StringType

log = logging.getLogger(__name__)

#: Output columns of :func:`connected_components`.
NODE = "node"
COMPONENT = "component"

#: The size buckets of :func:`components_stats` (inclusive bounds; ``None`` = unbounded). Size 1 only
#: occurs for a node whose only edges are self-loops.
SIZE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("1", 1, 1),
    ("2", 2, 2),
    ("3-5", 3, 5),
    ("6-10", 6, 10),
    ("11-100", 11, 100),
    (">100", 101, None),
)


@dataclasses.dataclass
class ComponentsInfo:
    """What one :func:`connected_components_with_info` run did (small numbers only)."""

    rounds: int  # Large-Star + Small-Star rounds, including the last one, which changed nothing
    edges: int  # distinct undirected edges of the input, self-loops excluded
    self_loops: int  # distinct self-loops of the input
    edges_per_round: list[int]  # distinct edges each round started from (the last: the final stars)
    changed_per_round: list[int]  # edges each round rewrote (the last: 0)
    checkpoint: str  # "local" (localCheckpoint) or "reliable" (checkpoint to the checkpoint dir)
    seconds: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def connected_components(edges: DataFrame, src: str = "src", dst: str = "dst", checkpoint_every: int = 3,
                         max_rounds: int = 100) -> DataFrame:
    """``DataFrame[node, component]``: every node of ``edges`` with the smallest node id of its component.

    Node ids are strings (string order, i.e. binary UTF-8 order) or integers; ``node`` and ``component``
    have the type of ``src``/``dst``. Only nodes that appear in some edge are in the output; self-loops
    and duplicate edges are allowed, edges with a null end are ignored. See the module docstring for the
    algorithm, checkpointing and :func:`connected_components_with_info` for the round count.
    """
    return connected_components_with_info(edges, src, dst, checkpoint_every, max_rounds)[0]


def connected_components_with_info(edges: DataFrame, src: str = "src", dst: str = "dst",
                                   checkpoint_every: int = 3,
                                   max_rounds: int = 100) -> tuple[DataFrame, ComponentsInfo]:
    """:func:`connected_components` and a :class:`ComponentsInfo` (``rounds`` for a caller's stats).

    Raises ``RuntimeError`` if the edge set still changes after ``max_rounds`` rounds.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
    _check_columns(edges, src, dst)
    started = time.monotonic()
    ck = _Checkpointer(edges.sparkSession)

    # E0: undirected, oriented src <= dst, distinct, read from the input exactly once
    s, d = F.col(src), F.col(dst)
    oriented = (edges.where(s.isNotNull() & d.isNotNull())
                .select(F.least(s, d).alias("src"), F.greatest(s, d).alias("dst"))
                .distinct())
    last_checkpoint = all_edges = ck.checkpoint(oriented)
    loops = cached = None  # cached: the last round's edges when persisted rather than checkpointed
    try:
        counts = all_edges.agg(F.count(F.when(F.col("src") != F.col("dst"), 1)).alias("edges"),
                               F.count(F.when(F.col("src") == F.col("dst"), 1)).alias("loops")).first()
        info = ComponentsInfo(0, counts["edges"], counts["loops"], [], [], ck.kind, 0.0)
        log.info("connected components: %d edges, %d self-loops, %s checkpoints every %d rounds",
                 info.edges, info.self_loops, ck.kind, checkpoint_every)
        if info.self_loops:
            loops = ck.checkpoint(all_edges.where(F.col("src") == F.col("dst"))
                                  .select(F.col("src").alias(NODE), F.col("src").alias(COMPONENT)))
        current = all_edges.where(F.col("src") != F.col("dst"))
        converged = info.edges == 0
        while not converged:
            if info.rounds >= max_rounds:
                raise RuntimeError(f"connected components did not converge in {max_rounds} rounds "
                                   f"(edges rewritten per round: {info.changed_per_round})")
            info.rounds += 1
            t0 = time.monotonic()
            checkpointed = info.rounds % checkpoint_every == 0
            new = ck.checkpoint(_round(current)) if checkpointed else _round(current).persist()
            # the convergence check: one row, computed while ``new`` is materialized (a persisted
            # one) or from its blocks (a checkpoint); no shuffle of its own
            row = new.agg(F.count(F.lit(1)).alias("edges"),
                          F.count(F.when(F.col("_changed"), 1)).alias("changed")).first()
            if cached is not None:
                cached.unpersist(blocking=True)
            if checkpointed:
                ck.release(last_checkpoint)
                last_checkpoint = new
            current, cached = new, None if checkpointed else new
            info.edges_per_round.append(row["edges"])
            info.changed_per_round.append(row["changed"])
            converged = row["changed"] == 0
            log.info("connected components round %d: %d edges, %d rewritten, %.2f s",
                     info.rounds, row["edges"], row["changed"], time.monotonic() - t0)

        # at the fixpoint every edge is (component minimum, node)
        labels = current.select(F.col("dst").alias(NODE), F.col("src").alias(COMPONENT)).unionByName(
            current.select(F.col("src").alias(NODE), F.col("src").alias(COMPONENT)))
        if loops is not None:
            labels = labels.unionByName(loops)
        result = ck.checkpoint(labels.groupBy(NODE).agg(F.min(COMPONENT).alias(COMPONENT)))
    finally:  # the result is materialized (or the run failed): nothing else is needed any more
        if cached is not None:
            cached.unpersist(blocking=True)
        ck.release(last_checkpoint)
        if loops is not None:
            ck.release(loops)
    info.seconds = round(time.monotonic() - started, 3)
    log.info("connected components: converged after %d rounds in %.1f s", info.rounds, info.seconds)
    return result, info


def _check_columns(edges: DataFrame, src: str, dst: str) -> None:
    fields = {f.name: f.dataType for f in edges.schema.fields}
    for name in (src, dst):
        if name not in fields:
            raise ValueError(f"edges have no column {name!r} (columns: {', '.join(fields)})")
    st, dt = fields[src], fields[dst]
    if st != dt:
        raise TypeError(f"edge columns {src!r} ({st.simpleString()}) and {dst!r} ({dt.simpleString()}) "
                        "must have the same type")
    binary_string = isinstance(st, StringType) and getattr(st, "collation", "UTF8_BINARY") == "UTF8_BINARY"
    if not (binary_string or isinstance(st, IntegralType)):
        raise TypeError(f"node ids must be strings (binary collation) or integers, got {st.simpleString()}")


def _round(edges: DataFrame) -> DataFrame:
    """One Large-Star then one Small-Star: ``[src, dst]`` (``src < dst``, duplicates allowed) to
    ``[src, dst, _changed]``, one row per distinct input edge, ``_changed`` = the row is not its edge.

    Two shuffles and no join: Large-Star hash-partitions the symmetrized edges by node once and then
    deduplicates them and takes each node's minimum within that partitioning (a window over the node);
    Small-Star takes each ``dst``'s smallest ``src`` with a window over ``dst``. Each distinct edge is
    rewritten into exactly one edge (possibly a duplicate of another, dropped by the next round), so the
    edge set is unchanged exactly when no row is ``_changed``: if none is, every ``src`` has no smaller
    neighbour and every ``dst`` exactly one, i.e. the edges are stars around their minima, which the
    next round would leave as they are; and the edge set only stays the same once it is such stars.
    """
    both = F.array(F.struct(F.col("src").alias("n"), F.col("dst").alias("v")),
                   F.struct(F.col("dst").alias("n"), F.col("src").alias("v")))
    sym = edges.select(F.explode(both).alias("_e")).select("_e.n", "_e.v").repartition("n").distinct()
    # Large-Star: (n, v), n < v, becomes (m(n), v), m(n) = min of n and its neighbours
    m = F.least(F.col("n"), F.min("v").over(Window.partitionBy("n")))
    large = (sym.select(m.alias("src"), F.col("v").alias("dst"), "n")
             .where(F.col("dst") > F.col("n"))
             .select("src", "dst", (F.col("src") != F.col("n")).alias("_moved")))
    # Small-Star: (w, u), w < u, becomes (m'(u), w), m'(u) = min of u's smaller neighbours, and the
    # row (m'(u), u) itself stays: that is the edge Small-Star adds from u to m'(u)
    small = large.select(F.min("src").over(Window.partitionBy("dst")).alias("_m"), "src", "dst", "_moved")
    same = F.col("src") == F.col("_m")
    return small.select(F.col("_m").alias("src"),
                        F.when(same, F.col("dst")).otherwise(F.col("src")).alias("dst"),
                        (F.col("_moved") | ~same).alias("_changed"))


class _Checkpointer:
    """Eager checkpoints: reliable when the SparkContext has a checkpoint dir, local otherwise."""

    def __init__(self, spark) -> None:
        try:
            directory = spark.sparkContext.getCheckpointDir()
        except Exception:  # Spark Connect has no SparkContext: local checkpoints only
            directory = None
        self.kind = "reliable" if directory else "local"

    def checkpoint(self, df: DataFrame) -> DataFrame:
        return df.checkpoint(eager=True) if self.kind == "reliable" else df.localCheckpoint(eager=True)

    def release(self, df: DataFrame) -> None:
        """Drop a local checkpoint's blocks now rather than when the JVM's garbage collector notices.

        Only for checkpoints nothing still reads: a released local checkpoint cannot be recomputed.
        Reliable checkpoints are files, left to Spark's cleaner.
        """
        if self.kind != "local":
            return
        try:
            plan = df._jdf.queryExecution().logical()
            if plan.getClass().getSimpleName() == "LogicalRDD":
                plan.rdd().unpersist(True)
        except Exception:  # not a classic (py4j) DataFrame: leave it to the ContextCleaner
            log.debug("could not release a local checkpoint", exc_info=True)


def components_stats(components: DataFrame, top_k: int = 10, component: str = COMPONENT) -> dict:
    """Sizes of the components of a ``[node, component]`` DataFrame, computed by Spark; small results only.

    Returns ``{"components", "nodes", "redundant_nodes", "size_histogram", "largest"}``:
    ``redundant_nodes`` = nodes - components (what keeping one document per component drops),
    ``size_histogram`` = number of components per size bucket (:data:`SIZE_BUCKETS`: ``1`` (self-loops
    only), ``2``, ``3-5``, ``6-10``, ``11-100``, ``>100``), ``largest`` = the ``top_k`` largest
    components as ``{"component", "size"}``, largest first, ties by id.
    """
    sizes = components.groupBy(component).agg(F.count(F.lit(1)).alias("size")).persist()
    try:
        size = F.col("size")
        buckets = [F.count(F.when((size >= lo) if hi is None else size.between(lo, hi), 1)).alias(f"b{i}")
                   for i, (_, lo, hi) in enumerate(SIZE_BUCKETS)]
        row = sizes.agg(F.count(F.lit(1)).alias("components"),
                        F.coalesce(F.sum("size"), F.lit(0)).alias("nodes"), *buckets).first()
        largest = sizes.orderBy(F.desc("size"), F.asc(component)).limit(top_k).collect() if top_k > 0 else []
    finally:
        sizes.unpersist(blocking=True)
    return {
        "components": row["components"],
        "nodes": row["nodes"],
        "redundant_nodes": row["nodes"] - row["components"],
        "size_histogram": {name: row[f"b{i}"] for i, (name, _, _) in enumerate(SIZE_BUCKETS)},
        "largest": [{"component": r[component], "size": r["size"]} for r in largest],
    }
