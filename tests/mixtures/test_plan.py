"""The curriculum planner: Megatron's index semantics, the greedy blend's bound, caps, determinism, and
provenance in both directions, on the corpus's own mix run."""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import numpy as np
import pytest

from mixtures import indices
from mixtures import plan as planmod
from mixtures import spec as specmod
from mixtures.reader import TrainingPlan
from pipelines.errors import UserError
from tests.conftest import TEST_MIXTURE


def _megatron():
    pytest.importorskip("megatron.core")
    from megatron.core.datasets import helpers
    from megatron.core.datasets.gpt_dataset import _build_document_index, _build_shuffle_index

    return helpers, _build_document_index, _build_shuffle_index


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_indices_equal_megatron_core():
    """Document, sample and shuffle indices (both shuffle modes) and the blend equal Megatron-core's
    own builders (its C++ helpers) on random documents, lengths and seeds."""
    helpers, build_document_index, build_shuffle_index = _megatron()
    rng = np.random.RandomState(0)
    separate_seen = set()
    for trial in range(40):
        n = rng.randint(1, 300)
        sizes = rng.randint(1, 2000, size=n).astype(np.int32)
        docs = np.sort(rng.choice(n, size=rng.randint(1, n + 1), replace=False)).astype(np.int32)
        seq_len = int(rng.choice([2, 16, 256, 1000]))
        samples, seed = int(rng.randint(1, 3000)), int(rng.randint(0, 2**31))
        mine = indices.build_source_indices(sizes, docs, samples, seq_len, seed)
        tokens = int(sizes[docs].sum())
        r = np.random.RandomState(seed)
        doc_index = build_document_index(docs, mine.num_epochs, r, mine.separate_final_epoch)
        sample_index = helpers.build_sample_idx(sizes, doc_index, seq_len, mine.num_epochs, tokens, True, True)
        total = sample_index.shape[0] - 1
        first = ((mine.num_epochs - 1) * tokens - 1) // seq_len if mine.separate_final_epoch else total
        shuffle = build_shuffle_index(first, total, r)
        separate_seen.add(mine.separate_final_epoch)
        assert np.array_equal(doc_index, mine.document_index), trial
        assert sample_index.dtype == mine.sample_index.dtype and np.array_equal(sample_index, mine.sample_index)
        assert shuffle.dtype == mine.shuffle_index.dtype and np.array_equal(shuffle, mine.shuffle_index)
        assert total >= samples
    assert separate_seen == {True, False}
    for _ in range(20):
        k = rng.randint(1, 7)
        weights, size = rng.dirichlet(np.ones(k)), int(rng.randint(1, 20000))
        ref_index, ref_sample = np.zeros(size, np.int16), np.zeros(size, np.int64)
        helpers.build_blending_indices(ref_index, ref_sample, weights, k, size, False)
        index, sample = indices.blend(weights, size)
        assert np.array_equal(ref_index, index) and np.array_equal(ref_sample, sample)


def test_blend_prefix_bound_on_the_real_plan(mix_plan):
    """Over every prefix of n samples of a phase, each source's count is within 2 of weight x n."""
    manifest = json.loads((mix_plan / "train_manifest.json").read_text())
    for phase in manifest["phases"]:
        which = np.load(mix_plan / phase["blend"]["dataset_index"])
        assert len(which) == phase["samples"] > 1000
        n = np.arange(1, len(which) + 1)
        for k, name in enumerate(phase["blend"]["sources"]):
            counts = np.cumsum(which == k)
            gap = np.abs(counts - phase["sources"][name]["weight"] * n)
            assert gap.max() < 2, (phase["name"], name, gap.max())
            assert counts[-1] == phase["sources"][name]["samples"]
        # and each source's sample numbers count up 0, 1, 2 ... in blend order
        sample = np.load(mix_plan / phase["blend"]["dataset_sample_index"])
        for k in range(len(phase["blend"]["sources"])):
            assert np.array_equal(sample[which == k], np.arange((which == k).sum()))


def test_plan_figures_and_buckets(mix_plan, mix_tokens):
    manifest = json.loads((mix_plan / "train_manifest.json").read_text())
    tokens = json.loads((mix_tokens / "tokens.json").read_text())
    assert manifest["samples"] == 1_500_000 // 128
    assert sum(p["samples"] for p in manifest["phases"]) == manifest["samples"]
    assert [p["samples"] for p in manifest["phases"]] == [round(0.75 * manifest["samples"]),
                                                           manifest["samples"] - round(0.75 * manifest["samples"])]
    plan = TrainingPlan(str(mix_plan))
    for name, src in manifest["sources"].items():
        assert src["tokens"] == tokens["totals"]["sources"][name]["tokens"]
        assert src["documents"] == tokens["totals"]["sources"][name]["documents"]
        assert src["epochs"] <= src["max_epochs"]
        assert src["samples"] == sum(p["sources"][name]["samples"] for p in manifest["phases"])
    anneal = manifest["phases"][1]
    wheres = {"web": "lang_score >= 0.9", "code": "quality_score >= 0.1", "books": "quality_score >= 0.5"}
    for name, info in anneal["sources"].items():
        assert info["where"] == wheres[name]  # a source's own bucket, else the phase's
        (cond,) = specmod.parse_where(info["where"])
        scores = plan.sources[name].table.column(cond.column).to_numpy(zero_copy_only=False)
        heldout = plan.sources[name].table.column("heldout").to_numpy(zero_copy_only=False)
        bucket = set(np.flatnonzero(cond.apply(scores) & ~heldout).tolist())
        assert info["documents"] == len(bucket) > 0
        drawn = set(np.load(mix_plan / info["document_index"]).tolist())
        assert drawn == bucket  # every bucket document, and only those
        expected = (info["samples"] * 128 + 1) / info["pool_tokens"]
        assert info["epochs"] == pytest.approx(expected, rel=1e-5)


def test_samples_are_megatron_samples_and_trace_both_ways(mix_plan):
    """Sample N's tokens equal the documents' tokens read with Megatron-core's own IndexedDataset at
    the positions `trace` names; `--doc` on each of those documents lists sample N back."""
    pytest.importorskip("megatron.core")
    from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronIndexed

    from mixtures.trace_cli import trace_doc, trace_sample

    plan = TrainingPlan(str(mix_plan))
    rng = np.random.RandomState(1)
    readers: dict[str, MegatronIndexed] = {}
    seen_phases, multi = set(), 0
    across = [n for n in range(0, plan.num_samples, 7) if len(plan.pieces(n)) > 1][:5]  # across a boundary
    assert across
    for n in sorted(rng.choice(plan.num_samples, 25, replace=False).tolist()) + [0, plan.num_samples - 1] + across:
        tokens = plan.sample(n)
        assert tokens.shape == (plan.seq_len + 1,)
        traced = trace_sample(plan, n)
        seen_phases.add(traced["phase"])
        parts = []
        for d in traced["documents"]:
            source, number = plan.find_document(d["id"])
            row = plan.document(source, number)
            shard = plan.manifest["sources"][source]["shards"][row["shard"]]
            prefix = shard["bin"][:-4]
            readers.setdefault(prefix, MegatronIndexed(prefix))
            a, b = d["tokens"]
            parts.append(readers[prefix].get(row["row"], offset=a, length=b - a))
            assert n in {s["sample"] for s in trace_doc(plan, d["id"])["samples"]}
        multi += len(traced["documents"]) > 1
        assert np.array_equal(np.concatenate(parts).astype(np.int64), tokens)
    assert seen_phases == {"main", "anneal"} and multi > 0


def test_every_sample_of_a_document_reads_it(mix_plan):
    plan = TrainingPlan(str(mix_plan))
    source = "web"
    number = int(np.flatnonzero(~plan.sources[source].table.column("heldout").to_numpy(zero_copy_only=False))[3])
    doc = plan.document(source, number)
    samples = plan.samples_of(source, number)
    assert samples
    for s in samples[:20]:
        pieces = [p for p in plan.pieces(s["sample"]) if p.source == source and p.document == number]
        assert [p.start for p in pieces] and s["tokens"][0] in [p.start for p in pieces]
    # every token of the document is read at least once when it is drawn a whole epoch or more
    covered = np.zeros(doc["tokens"], bool)
    for s in samples:
        covered[s["tokens"][0]:s["tokens"][1]] = True
    assert covered.all()


def test_same_inputs_same_files(mix_plan, mix_tokens, tmp_path):
    planmod.build(specmod.load(mix_plan.parent / "mixture.yaml"), str(tmp_path / "again"))
    names = sorted(str(p.relative_to(mix_plan)) for p in mix_plan.rglob("*") if p.is_file()
                   and p.name != "mixture.html")
    assert len(names) > 10
    assert names == sorted(str(p.relative_to(tmp_path / "again")) for p in (tmp_path / "again").rglob("*")
                           if p.is_file() and p.name != "mixture.html")
    _, mismatch, errors = filecmp.cmpfiles(mix_plan, tmp_path / "again", names, shallow=False)
    assert not mismatch and not errors
    # another seed: other shuffles, same figures
    (tmp_path / "m2.yaml").write_text(TEST_MIXTURE.format(tokens=mix_tokens / "tokens.json").replace("seed: 7", "seed: 8"))
    other = planmod.build(specmod.load(tmp_path / "m2.yaml"), str(tmp_path / "other"))
    assert other["phases"][0]["sources"]["books"]["samples"] == json.loads(
        (mix_plan / "train_manifest.json").read_text())["phases"][0]["sources"]["books"]["samples"]
    a = np.load(mix_plan / "phase-00" / "books.shuffle_index.npy")
    b = np.load(tmp_path / "other" / "phase-00" / "books.shuffle_index.npy")
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("change, message", [
    (("weights: {web: 0.2, code: 0.3, books: 0.5}", "weights: {web: 0.2, code: 0.3, books: 0.4}"),
     "mixture.yaml:10: phases[0].weights: phase main: weights sum to 0.9, not 1 (web 0.2 + code 0.3 + books 0.4)"),
    (("share: 0.25", "share: 0.3"), "mixture.yaml:7: phases: phase shares sum to 1.05, not 1 (main 0.75 + anneal 0.3)"),
    (("web: {weight: 0.1", "wbe: {weight: 0.1"),
     "mixture.yaml:15: phases[1].weights.wbe: phase anneal: unknown source 'wbe' (did you mean 'web'?)"),
    (("web: 12", "web: 9"), "mixture.yaml:10: phases[0].weights.web: web: phase main needs 9.62 epochs of its 22 "
                            "documents (225,024 tokens of 23,393), cap is 9"),
    (("web: 12", "web: 10"), "mixture.yaml:6: max_epochs: web: its documents are read 11.22 times over all phases "
                             "(main 9.62, anneal 1.60), cap is 10"),
    (("lang_score >= 0.9", "lang_score >= 2"),
     "mixture.yaml:15: phases[1].weights.web: web: phase anneal draws 293 samples but has no documents with lang_score >= 2"),
    (("quality_score >= 0.5", "quality_scor >= 0.5"), "no column 'quality_scor' for the mixture's `where`"),
    (("quality_score >= 0.5", "quality_score => 0.5"), "phases[1].where: cannot read 'quality_score => 0.5'"),
    (("budget_tokens: 1_500_000", "budget_tokens: lots"), "budget_tokens: Value error, cannot read 'lots'"),
])
def test_user_errors_are_one_line_with_numbers(mix_tokens, tmp_path, capsys, change, message):
    from pipelines import cli

    text = TEST_MIXTURE.format(tokens=mix_tokens / "tokens.json")
    assert change[0] in text
    (tmp_path / "mixture.yaml").write_text(text.replace(change[0], change[1]))
    code = cli.main(["mix", str(tmp_path / "mixture.yaml"), "--output", str(tmp_path / "plan")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert message in err, err
    assert not (tmp_path / "plan").exists() and not list(tmp_path.glob("plan.tmp-*"))


def test_cli_mix_and_trace(mix_tokens, tmp_path, capsys):
    from pipelines import cli

    (tmp_path / "mixture.yaml").write_text(TEST_MIXTURE.format(tokens=mix_tokens / "tokens.json"))
    assert cli.main(["mix", str(tmp_path / "mixture.yaml"), "--output", str(tmp_path / "plan"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 1_500_000 // 128 and set(out["sources"]) == {"web", "code", "books"}
    assert cli.main(["trace", str(tmp_path / "plan"), "--sample", "5", "--format", "json"]) == 0
    traced = json.loads(capsys.readouterr().out)
    assert traced["sample"] == 5 and traced["documents"]
    doc = traced["documents"][0]
    assert cli.main(["trace", str(tmp_path / "plan"), "--doc", doc["id"]]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"document {doc['id']} ({doc['source']}") and "\n  sample 5  phase main" in text
    assert cli.main(["trace", str(tmp_path / "plan"), "--sample", str(10**9)]) == 2
    assert "the plan has samples 0 to" in capsys.readouterr().err
    assert cli.main(["trace", str(tmp_path / "plan"), "--doc", "nope"]) == 2
    assert cli.main(["trace", str(tmp_path / "nowhere"), "--sample", "1"]) == 2


def test_missing_shards_and_stale_tokens_are_one_line_errors(mix_tokens, tmp_path):
    import shutil

    tokens = tmp_path / "tokens"
    shutil.copytree(mix_tokens, tokens)
    manifest = json.loads((tokens / "tokens.json").read_text())
    manifest["run"]["path"] = str(tmp_path / "gone")
    (tokens / "tokens.json").write_text(json.dumps(manifest))
    (tmp_path / "m.yaml").write_text(TEST_MIXTURE.format(tokens=tokens / "tokens.json"))
    with pytest.raises(UserError, match="the pipeline run's shard is gone"):
        planmod.build(specmod.load(tmp_path / "m.yaml"), str(tmp_path / "plan"))
    with pytest.raises(UserError, match="no such tokens manifest"):
        specmod.load_text(TEST_MIXTURE.format(tokens=tmp_path / "x.json"), "m.yaml")
        planmod.build(specmod.load_text(TEST_MIXTURE.format(tokens=tmp_path / "x.json"), "m.yaml"),
                      str(tmp_path / "p"))
    assert not os.path.exists(tmp_path / "plan")
    assert Path(tmp_path / "m.yaml").exists()


def test_heldout_documents_never_train(mix_plan):
    """The held-out share of every source is in no phase, and its samples read only those documents."""
    plan = TrainingPlan(str(mix_plan))
    manifest = plan.manifest
    assert manifest["heldout"]["share"] == 0.01
    for name, src in plan.sources.items():
        held = np.flatnonzero(src.table.column("heldout").to_numpy(zero_copy_only=False))
        assert len(held) == manifest["sources"][name]["heldout_documents"] >= (1 if len(src.sizes) >= 20 else 0)
        assert np.array_equal(held, np.flatnonzero(planmod.heldout_mask(src.table.column("id"), 0.01)))
        for phase in manifest["phases"]:
            info = phase["sources"][name]
            assert not np.isin(np.load(mix_plan / info["document_index"]), held).any()
        k = plan.heldout_samples(name)
        if k:
            info = manifest["heldout"]["sources"][name]
            expected = np.concatenate([plan.sources[name].tokens(int(d), 0, int(src.sizes[d])) for d in held])
            got = np.concatenate([plan.heldout_sample(name, i)[:-1] for i in range(k)])
            assert np.array_equal(got, expected[:k * plan.seq_len]) and info["documents"] == len(held)
    assert sum(plan.heldout_samples(s) for s in plan.sources) > 0
