"""Connected components (Large-Star / Small-Star on Spark) against a pure-Python union-find."""

from __future__ import annotations

import random

import pytest

from operators.dedup.components import components_stats, connected_components, connected_components_with_info


def union_find(edges):
    """{node: smallest node id of its component} for every node of ``edges`` (self-loops included)."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the root is always the smallest id
    return {x: find(x) for x in parent}


def run(spark, edges, kind="long", **kw):
    df = spark.createDataFrame(edges, f"src {kind}, dst {kind}")
    result, info = connected_components_with_info(df, **kw)
    rows = result.collect()
    got = {r["node"]: r["component"] for r in rows}
    assert len(got) == len(rows), "a node appears twice"
    return got, info, result


def cached(spark):
    """Ids of the RDDs with blocks in the block manager, and of those marked persistent."""
    jsc = spark.sparkContext._jsc
    return ({i.id() for i in jsc.sc().getRDDStorageInfo()}, {int(k) for k in jsc.getPersistentRDDs().keySet()})


def hex_ids(n, seed):
    """``n`` distinct 16-hex-digit ids (document ids), in random order."""
    rng = random.Random(seed)
    ids: dict[str, None] = {}
    while len(ids) < n:
        ids[f"{rng.getrandbits(64):016x}"] = None
    return list(ids)


def test_small_graph_self_loops_duplicates_nulls(spark):
    edges = [(5, 3), (3, 5), (3, 5), (3, 3), (9, 7), (7, 8), (8, 9), (4, 4), (4, 4), (11, None), (None, 12),
             (2**40, 2**40 + 1)]
    got, info, result = run(spark, edges)
    # 4 has only self-loops: a component of its own; 11 and 12 only touch null edges: not nodes
    assert got == {3: 3, 5: 3, 7: 7, 8: 7, 9: 7, 4: 4, 2**40: 2**40, 2**40 + 1: 2**40}
    assert dict(result.dtypes) == {"node": "bigint", "component": "bigint"}
    assert info.edges == 5 and info.self_loops == 2


def test_types_and_column_names_follow_the_input(spark):
    df = spark.createDataFrame([(2, 1, "x"), (3, 2, "y")], "a int, b int, label string")
    out = connected_components(df, src="a", dst="b")
    assert dict(out.dtypes) == {"node": "int", "component": "int"}
    assert sorted(map(tuple, out.collect())) == [(1, 1), (2, 1), (3, 1)]
    strings = spark.createDataFrame([("b", "a"), ("c", "d")], "s string, t string")
    out = connected_components(strings, src="s", dst="t")
    assert dict(out.dtypes) == {"node": "string", "component": "string"}
    assert dict(map(tuple, out.collect())) == {"a": "a", "b": "a", "c": "c", "d": "c"}


def test_bad_input(spark):
    df = spark.createDataFrame([(1, "a", 1.0)], "i long, s string, f double")
    with pytest.raises(ValueError, match="no column 'dst'"):
        connected_components(df, src="i")
    with pytest.raises(TypeError, match="same type"):
        connected_components(df, src="i", dst="s")
    with pytest.raises(TypeError, match="strings .* or integers"):
        connected_components(df, src="f", dst="f")
    with pytest.raises(ValueError, match="checkpoint_every"):
        connected_components(df, src="i", dst="i", checkpoint_every=0)


def test_empty_input(spark):
    result, info = connected_components_with_info(spark.createDataFrame([], "src string, dst string"))
    assert result.count() == 0 and info.rounds == 0
    assert dict(result.dtypes) == {"node": "string", "component": "string"}


def test_long_chain_leaves_no_cached_intermediates(spark):
    """A 2,000-node path with ids increasing along it: the most rounds (12); checkpoints every 2."""
    n = 2000
    before = cached(spark)
    result, info = connected_components_with_info(
        spark.createDataFrame([(i + 1, i) for i in range(n - 1)], "src long, dst long"), checkpoint_every=2)
    after = cached(spark)
    # the result's local checkpoint is all that is left of the run: no round's edges stay cached
    assert len(after[0] - before[0]) == 1 and len(after[1] - before[1]) == 1
    assert dict(map(tuple, result.collect())) == {i: 0 for i in range(n)}
    assert info.changed_per_round[-1] == 0 and info.edges_per_round[-1] == n - 1
    assert 2 <= info.rounds <= 20, info.rounds
    print(f"chain of {n}: {info.rounds} rounds")


def test_large_star_centre_not_minimum(spark):
    leaves, centre = 5000, 2500
    nodes = [i for i in range(leaves + 1) if i != centre]
    edges = [(centre, x) if x % 2 else (x, centre) for x in nodes] + [(centre, 7), (centre, centre)]
    got, info, _ = run(spark, edges)
    assert got == {x: 0 for x in [*nodes, centre]}
    assert info.rounds <= 4, info.rounds
    print(f"star of {leaves} leaves: {info.rounds} rounds")


@pytest.mark.parametrize("kind, checkpoint_every", [("long", 3), ("string", 1)])
def test_random_graphs_match_union_find(spark, kind, checkpoint_every):
    """Sparse random graphs (many small components beside a giant one), duplicates and self-loops."""
    rng = random.Random(7 if kind == "long" else 8)
    n = 3000
    ids = list(range(n)) if kind == "long" else hex_ids(n, seed=2)
    edges = [(ids[rng.randrange(n)], ids[rng.randrange(n)]) for _ in range(1400)]
    edges += edges[:50] + [(b, a) for a, b in edges[50:100]] + [(x, x) for x in ids[:20]]
    expected = union_find(edges)
    got, info, _ = run(spark, edges, kind=kind, checkpoint_every=checkpoint_every)
    assert got == expected
    sizes = sorted({c: list(expected.values()).count(c) for c in set(expected.values())}.values())
    assert sizes[0] <= 2 and sizes[-1] > 10  # the graph does have both small and large components
    print(f"random {kind} graph: {len(expected)} nodes, {info.rounds} rounds")


def test_reliable_checkpoints_when_a_checkpoint_dir_is_set(spark, tmp_path):
    jsc = spark.sparkContext._jsc.sc()
    previous = spark.sparkContext.getCheckpointDir()
    jsc.setCheckpointDir(str(tmp_path))
    try:
        edges = [(i, i + 1) for i in range(50)] + [(100, 101)]
        got, info, _ = run(spark, edges, checkpoint_every=1)
    finally:
        jsc.setCheckpointDir(previous)  # None: back to no checkpoint dir
    assert info.checkpoint == "reliable"
    assert got == union_find(edges)
    assert any(p.is_dir() for p in tmp_path.rglob("rdd-*"))


def test_max_rounds(spark):
    edges = spark.createDataFrame([(i, i + 1) for i in range(200)], "src long, dst long")
    before = cached(spark)
    with pytest.raises(RuntimeError, match="did not converge in 2 rounds"):
        connected_components(edges, max_rounds=2, checkpoint_every=2)
    after = cached(spark)
    assert after[0] <= before[0] and after[1] <= before[1]  # a failed run releases what it held


def test_components_stats(spark):
    # components of sizes 1 (self-loop only), 2, 2, 3, 7, 12, 150
    edges = [(0, 0), (1, 2), (3, 4), (5, 6), (6, 7)]
    for start, size in ((10, 7), (100, 12), (1000, 150)):
        edges += [(start, start + i) for i in range(1, size)]
    components = connected_components(spark.createDataFrame(edges, "src long, dst long"))
    stats = components_stats(components, top_k=2)
    assert stats == {
        "components": 7,
        "nodes": 1 + 2 + 2 + 3 + 7 + 12 + 150,
        "redundant_nodes": 1 + 2 + 2 + 3 + 7 + 12 + 150 - 7,
        "size_histogram": {"1": 1, "2": 2, "3-5": 1, "6-10": 1, "11-100": 1, ">100": 1},
        "largest": [{"component": 1000, "size": 150}, {"component": 100, "size": 12}],
    }
    empty = components_stats(components.limit(0))
    assert empty["components"] == 0 and empty["nodes"] == 0 and empty["largest"] == []
