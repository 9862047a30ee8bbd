"""The curriculum planner: a mixture spec and its token files -> the training manifest.

The plan fixes, before training starts, which tokens the trainer sees in which order:

1. The budget is cut into ``budget_tokens // seq_len`` samples of ``seq_len + 1`` tokens, and the
   samples into phases by their shares (cumulative rounding, so the phases add up exactly).
2. In each phase the sources are blended by Megatron's greedy rule (``indices.blend``); that fixes
   how many samples each source gives.
3. Each source's documents (those in the phase's quality bucket, if it has one) are laid out over as
   many shuffled epochs as those samples need, cut into samples across document boundaries and the
   samples shuffled, as Megatron's GPTDataset does (``indices.build_source_indices``).
4. Before anything is written, the repetition caps are checked: per phase, and per document over all
   phases (a document in both a main and an annealing bucket is counted in both).

A share of every source's documents (``heldout``, chosen by the CRC-32 of their ids, so the choice
does not depend on the order of the shards) never enters a phase: laid end to end in document order
they are the held-out samples the trainer evaluates on.

Output folder (``train_manifest.json`` describes every file; same inputs and seed give identical
bytes)::

    train_manifest.json
    documents/<source>.arrow                      id, url or path, tokens, quality_score, shard, row
    phase-NN/dataset_index.npy                    int16: source (position in the phase's list) per sample
    phase-NN/dataset_sample_index.npy             int64: that source's sample number
    phase-NN/<source>.document_index.npy          int32: document numbers (rows of documents/<source>)
    phase-NN/<source>.sample_index.npy            (samples + 1) x 2: document_index position, offset
    phase-NN/<source>.shuffle_index.npy           the source's sample k is sample_index row shuffle[k]
    heldout/<source>.document_index.npy           int32: the held-out documents, in document order
    heldout/<source>.sample_index.npy             their samples, one pass, no shuffle
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from mixtures import indices
from mixtures.spec import Condition, MixtureSpec, check_sources, fail_at
from operators.writers import write_json_atomic
from pipelines.errors import UserError
from tokenizer.indexed import IndexedDataset

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST_FILE = "train_manifest.json"
KIND = "smelter-training-manifest"
QUALITY_EDGES = [round(i / 10, 1) for i in range(11)]
#: where a document came from: its URL (web) or path (code, books); code rows also name their repo
LOCATION_COLUMNS = ("url", "path")


@dataclass
class SourceData:
    """Everything the planner knows about one source: its token files and its document table."""

    name: str
    tokens_manifest: str
    run: dict[str, Any]
    shards: list[dict[str, Any]]
    sizes: np.ndarray  # int32 tokens per document (EOD included), in document-table order
    table: pa.Table  # id, url|path, tokens, quality_score?, shard, row, where columns
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # numeric where columns, by name
    heldout: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # documents kept out of training

    @property
    def tokens(self) -> int:
        return int(self.sizes.sum(dtype=np.int64))


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read {what}: {e}") from None


def _where_columns(spec: MixtureSpec) -> dict[str, set[str]]:
    """Numeric columns each source's buckets read."""
    out: dict[str, set[str]] = {}
    for phase in spec.phases:
        for source in phase.weights:
            out.setdefault(source, set()).update(c.column for c in spec.where(phase, source))
    return out


def load_sources(spec: MixtureSpec) -> dict[str, SourceData]:
    """Read every tokens manifest the mixture names: token counts from the ``.idx`` files, document ids,
    locations and the bucket columns from the pipeline run's shards (which must still be in place)."""
    wanted = _where_columns(spec)
    sources: dict[str, SourceData] = {}
    tokenizer_sha = None
    for i, path in enumerate(spec.tokens):
        manifest = _read_json(path, "tokens manifest (run `smelter tokenize` first)")
        if manifest.get("schema_version") != 1 or "shards" not in manifest:
            raise fail_at(spec, ("tokens", i), f"{path}: not a `smelter tokenize` manifest (tokens.json)")
        sha = manifest["tokenizer"]["sha256"]
        if tokenizer_sha not in (None, sha):
            raise fail_at(spec, ("tokens", i), f"{path}: made with another tokenizer than {spec.tokens[0]} "
                          "(token ids would not mean the same): tokenize every run with one tokenizer")
        tokenizer_sha = sha
        folder = os.path.dirname(os.path.abspath(path))
        run_dir = manifest["run"]["path"]
        if not os.path.isabs(run_dir):
            run_dir = os.path.normpath(os.path.join(folder, run_dir))
        by_source: dict[str, list[dict[str, Any]]] = {}
        for shard in manifest["shards"]:
            by_source.setdefault(shard["source"], []).append(shard)
        for name, shards in by_source.items():
            if name in sources:
                raise fail_at(spec, ("tokens", i), f"{path}: source {name!r} is also in "
                              f"{sources[name].tokens_manifest}: source names must be unique across runs")
            sources[name] = _load_source(spec, name, path, folder, run_dir, manifest["run"], shards,
                                         sorted(wanted.get(name, ())))
    return sources


def _load_source(spec: MixtureSpec, name: str, manifest_path: str, folder: str, run_dir: str,
                 run: dict[str, Any], shards: list[dict[str, Any]], where_columns: list[str]) -> SourceData:
    sizes, tables, entries = [], [], []
    location = None
    for k, shard in enumerate(shards):
        prefix = os.path.join(folder, shard["bin"])[:-4]
        try:
            ds = IndexedDataset(prefix)
        except (OSError, ValueError) as e:
            raise UserError(f"{manifest_path}: shard {shard['bin']}: {e}") from None
        lengths = np.asarray(ds.sequence_lengths, np.int32)
        if len(lengths) != shard["documents"]:
            raise UserError(f"{prefix}.idx: {len(lengths)} documents, tokens.json says {shard['documents']}")
        arrow_path = os.path.join(run_dir, shard["input"])
        try:
            with pa.memory_map(arrow_path) as src:
                reader = ipc.open_file(src)
                names = reader.schema.names
                if location is None:
                    location = next((c for c in LOCATION_COLUMNS if c in names), None)
                missing = [c for c in where_columns if c not in names]
                if missing:
                    raise UserError(f"{arrow_path}: no column {missing[0]!r} for the mixture's `where` "
                                    f"(columns: {', '.join(names)})")
                cols = ["id"] + [c for c in ("repo", location, "quality_score") if c and c in names]
                cols += [c for c in where_columns if c not in cols]
                table = reader.read_all().select(cols)
        except FileNotFoundError:
            raise UserError(f"{arrow_path}: the pipeline run's shard is gone; the mixture reads document ids "
                            "and quality scores from it") from None
        if table.num_rows != len(lengths):
            raise UserError(f"{arrow_path}: {table.num_rows} rows, but its token file has {len(lengths)} "
                            "documents: tokenize the run again")
        table = table.append_column("tokens", pa.array(lengths, pa.int32()))
        table = table.append_column("shard", pa.array(np.full(len(lengths), k, np.int32)))
        table = table.append_column("row", pa.array(np.arange(len(lengths), dtype=np.int32)))
        sizes.append(lengths)
        tables.append(table)
        entries.append({"bin": os.path.join(folder, shard["bin"]), "idx": os.path.join(folder, shard["idx"]),
                        "documents": shard["documents"], "tokens": shard["tokens"],
                        "bin_sha256": shard["bin_sha256"], "input": shard["input"]})
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    first = 0
    for e in entries:
        e["first_document"] = first
        first += e["documents"]
    columns = {}
    for c in where_columns:
        col = table.column(c)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise UserError(f"{manifest_path}: source {name}: column {c!r} is {col.type}, not numeric")
        columns[c] = col.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> nan: never selected
    return SourceData(name, os.path.abspath(manifest_path), dict(run, path=run_dir), entries,
                      np.concatenate(sizes) if sizes else np.zeros(0, np.int32), table, columns)


def heldout_mask(ids: pa.ChunkedArray | pa.Array, share: float) -> np.ndarray:
    """The documents kept out of training: those whose id's CRC-32 falls in the lowest ``share`` of its
    range; at least one when the source has 20 documents or more and ``share`` > 0."""
    if share <= 0 or len(ids) == 0:
        return np.zeros(len(ids), bool)
    crc = np.fromiter((zlib.crc32(i.encode()) for i in ids.to_pylist()), np.uint64, len(ids))
    mask = crc < int(share * 2**32)
    if not mask.any() and len(ids) >= 20:
        mask[int(np.argmin(crc))] = True
    return mask


def _pool(source: SourceData, conditions: list[Condition]) -> np.ndarray:
    """Document numbers of ``source`` that satisfy every condition (all of them without conditions),
    held-out documents excepted."""
    mask = ~source.heldout
    for c in conditions:
        values = source.columns[c.column]
        with np.errstate(invalid="ignore"):
            mask &= c.apply(values) & ~np.isnan(values)
    return np.flatnonzero(mask).astype(np.int32)


def phase_samples(total: int, shares: list[float]) -> list[int]:
    """Samples per phase: boundaries at the rounded cumulative shares, so they sum to ``total``."""
    bounds = [0] + [round(total * sum(shares[:k + 1])) for k in range(len(shares))]
    bounds[-1] = total
    return [bounds[k + 1] - bounds[k] for k in range(len(shares))]


def source_seed(seed: int, phase: int, source: str) -> int:
    """The RandomState seed of one source in one phase: every (phase, source) gets its own stream."""
    return int(np.random.SeedSequence([seed, phase, zlib.crc32(source.encode())]).generate_state(1)[0])


def _quality(source: SourceData, pool: np.ndarray, epochs: float) -> dict[str, Any] | None:
    """Expected tokens drawn per quality_score bin: each pool document's tokens times the phase's epochs."""
    if "quality_score" not in source.table.column_names:
        return None
    scores = source.table.column("quality_score").to_numpy(zero_copy_only=False).astype(np.float64)[pool]
    weights = source.sizes[pool].astype(np.float64) * epochs
    ok = ~np.isnan(scores)
    counts, _ = np.histogram(np.clip(scores[ok], 0, 1), bins=QUALITY_EDGES, weights=weights[ok])
    return {"edges": QUALITY_EDGES, "tokens": [int(round(c)) for c in counts]}


@dataclass
class _Draw:
    phase: int
    source: str
    weight: float
    where: list[Condition]
    samples: int
    pool: np.ndarray
    pool_tokens: int


def build(spec: MixtureSpec, out_dir: str, progress=None) -> dict[str, Any]:
    """Plan ``spec`` and write the training manifest into ``out_dir``; return the manifest."""
    t0 = time.time()
    out_dir = os.path.abspath(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, MANIFEST_FILE)):
        raise UserError(f"{out_dir}: exists and is not a training plan folder; not replacing it")
    sources = load_sources(spec)
    check_sources(spec, sorted(sources))
    for source in sources.values():
        source.heldout = heldout_mask(source.table.column("id"), spec.heldout)
    total = spec.budget_tokens // spec.seq_len
    if total < 1:
        raise fail_at(spec, ("budget_tokens",), f"a budget of {spec.budget_tokens:,} tokens is less than one "
                      f"sample of seq_len {spec.seq_len}")
    per_phase = phase_samples(total, [p.share for p in spec.phases])

    # 1. blend each phase; 2. pools and epochs, checked against the caps before any index is built
    blends, draws = [], []
    for p, (phase, n) in enumerate(zip(spec.phases, per_phase, strict=True)):
        names = list(phase.weights)
        dataset_index, dataset_sample_index = indices.blend([phase.weights[s].weight for s in names], n)
        counts = np.bincount(dataset_index, minlength=len(names))
        blends.append((names, dataset_index, dataset_sample_index))
        for k, name in enumerate(names):
            where = spec.where(phase, name)
            pool = _pool(sources[name], where)
            pool_tokens = int(sources[name].sizes[pool].sum(dtype=np.int64))
            draws.append(_Draw(p, name, phase.weights[name].weight, where, int(counts[k]), pool, pool_tokens))
    _check_caps(spec, sources, draws)

    # 3. the indices, written under a temporary folder and moved in whole
    tmp = f"{out_dir.rstrip(os.sep)}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(os.path.join(tmp, "documents"))
    try:
        phases = _write_phases(spec, sources, blends, draws, per_phase, tmp, progress)
        heldout = _write_heldout(spec, sources, tmp)
        for name, source in sources.items():
            table = source.table.append_column("heldout", pa.array(source.heldout, pa.bool_()))
            _write_arrow(os.path.join(tmp, "documents", f"{name}.arrow"), table)
        manifest = _manifest(spec, sources, draws, phases, total)
        manifest["heldout"] = heldout
        write_json_atomic(os.path.join(tmp, MANIFEST_FILE), manifest)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("plan %s: %d samples in %.1f s", spec.name, total, time.time() - t0)
    return manifest


def _epochs(samples: int, seq_len: int, pool_tokens: int) -> float:
    """Passes over the pool that ``samples`` samples read (Megatron counts seq_len * samples + 1 tokens)."""
    return 0.0 if samples == 0 else (samples * seq_len + 1) / pool_tokens


def _most_passes(spec: MixtureSpec, source: SourceData, draws: list[_Draw]) -> tuple[float, list[str]]:
    """The most times any one document of ``source`` is read over all phases, and each phase's share of
    it ("main 1.20"): a document in several phases' pools counts in each."""
    passes = np.zeros(len(source.sizes))
    parts = []
    for d in (d for d in draws if d.source == source.name and d.samples):
        e = _epochs(d.samples, spec.seq_len, d.pool_tokens)
        passes[d.pool] += e
        parts.append(f"{spec.phases[d.phase].name} {e:.2f}")
    return (float(passes.max()) if len(passes) else 0.0), parts


def _check_caps(spec: MixtureSpec, sources: dict[str, SourceData], draws: list[_Draw]) -> None:
    for d in draws:
        phase = spec.phases[d.phase]
        bucket = f" with {' and '.join(map(str, d.where))}" if d.where else ""
        if d.samples and d.pool_tokens < 2:
            raise fail_at(spec, ("phases", d.phase, "weights", d.source),
                          f"{d.source}: phase {phase.name} draws {d.samples:,} samples but has no documents{bucket}")
        epochs = _epochs(d.samples, spec.seq_len, max(d.pool_tokens, 1))
        cap = spec.cap(d.source)
        if epochs > cap:
            raise fail_at(spec, ("phases", d.phase, "weights", d.source),
                          f"{d.source}: phase {phase.name} needs {epochs:.2f} epochs of its {len(d.pool):,} "
                          f"documents{bucket} ({d.samples * spec.seq_len:,} tokens of {d.pool_tokens:,}), "
                          f"cap is {cap:g}")
    for name, source in sources.items():
        most, parts = _most_passes(spec, source, draws)
        if most > spec.cap(name) + 1e-9:
            raise fail_at(spec, ("max_epochs",), f"{name}: its documents are read {most:.2f} times over all "
                          f"phases ({', '.join(parts)}), cap is {spec.cap(name):g}")


def _save(path: str, array: np.ndarray) -> str:
    np.save(path, array, allow_pickle=False)
    return path


def _write_phases(spec, sources, blends, draws, per_phase, tmp, progress) -> list[dict[str, Any]]:
    phases = []
    first = 0
    by_key = {(d.phase, d.source): d for d in draws}
    for p, (phase, n) in enumerate(zip(spec.phases, per_phase, strict=True)):
        names, dataset_index, dataset_sample_index = blends[p]
        folder = f"phase-{p:02d}"
        os.makedirs(os.path.join(tmp, folder))
        _save(os.path.join(tmp, folder, "dataset_index.npy"), dataset_index)
        _save(os.path.join(tmp, folder, "dataset_sample_index.npy"), dataset_sample_index)
        entry: dict[str, Any] = {
            "name": phase.name, "index": p, "share": phase.share, "samples": n, "first_sample": first,
            "tokens": n * spec.seq_len, "first_token": first * spec.seq_len,
            "blend": {"sources": names, "dataset_index": f"{folder}/dataset_index.npy",
                      "dataset_sample_index": f"{folder}/dataset_sample_index.npy"},
            "sources": {},
        }
        for name in names:
            d = by_key[(p, name)]
            src = sources[name]
            info: dict[str, Any] = {
                "weight": d.weight, "where": " and ".join(map(str, d.where)) or None, "samples": d.samples,
                "tokens": d.samples * spec.seq_len, "documents": int(len(d.pool)),
                "pool_tokens": d.pool_tokens, "epochs": round(_epochs(d.samples, spec.seq_len, d.pool_tokens), 6),
                "quality": _quality(src, d.pool, _epochs(d.samples, spec.seq_len, d.pool_tokens)),
            }
            if d.samples:
                seed = source_seed(spec.seed, p, name)
                built = indices.build_source_indices(src.sizes, d.pool, d.samples, spec.seq_len, seed)
                stem = f"{folder}/{name}"
                _save(os.path.join(tmp, stem + ".document_index.npy"), built.document_index)
                _save(os.path.join(tmp, stem + ".sample_index.npy"), built.sample_index)
                _save(os.path.join(tmp, stem + ".shuffle_index.npy"), built.shuffle_index)
                info.update({
                    "seed": seed, "num_epochs": built.num_epochs, "separate_final_epoch": built.separate_final_epoch,
                    "document_index": stem + ".document_index.npy", "sample_index": stem + ".sample_index.npy",
                    "shuffle_index": stem + ".shuffle_index.npy",
                })
            entry["sources"][name] = info
            if progress:
                progress(phase.name, name)
        phases.append(entry)
        first += n
    return phases


def _write_heldout(spec: MixtureSpec, sources: dict[str, SourceData], tmp: str) -> dict[str, Any]:
    """Per source: the held-out documents end to end, cut into samples like training samples."""
    out: dict[str, Any] = {"share": spec.heldout, "sources": {}}
    os.makedirs(os.path.join(tmp, "heldout"))
    for name, src in sources.items():
        docs = np.flatnonzero(src.heldout).astype(np.int32)
        tokens = int(src.sizes[docs].sum(dtype=np.int64))
        info: dict[str, Any] = {"documents": int(len(docs)), "tokens": tokens, "samples": 0}
        if tokens > spec.seq_len:
            samples = indices.sample_index(src.sizes, docs, spec.seq_len, 1, tokens)
            stem = f"heldout/{name}"
            _save(os.path.join(tmp, stem + ".document_index.npy"), docs)
            _save(os.path.join(tmp, stem + ".sample_index.npy"), samples)
            info.update({"samples": int(samples.shape[0] - 1), "document_index": stem + ".document_index.npy",
                         "sample_index": stem + ".sample_index.npy"})
        out["sources"][name] = info
    return out


def _write_arrow(path: str, table: pa.Table) -> None:
    with ipc.new_file(path, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table, max_chunksize=1 << 16)


def _manifest(spec: MixtureSpec, sources: dict[str, SourceData], draws: list[_Draw],
              phases: list[dict[str, Any]], total: int) -> dict[str, Any]:
    first = next(iter(sources.values()))
    tokens_manifest = _read_json(first.tokens_manifest, "tokens manifest")
    tok = tokens_manifest["tokenizer"]
    out_sources = {}
    for name, src in sources.items():
        samples = sum(d.samples for d in draws if d.source == name)
        out_sources[name] = {
            "tokens_manifest": src.tokens_manifest, "run": src.run,
            "documents": len(src.sizes), "tokens": src.tokens, "max_epochs": spec.cap(name),
            "heldout_documents": int(src.heldout.sum()),
            "epochs": round(_most_passes(spec, src, draws)[0], 6),
            "samples": samples, "tokens_drawn": samples * spec.seq_len,
            "documents_table": f"documents/{name}.arrow", "location_column": _location(src.table),
            "shards": src.shards,
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "mixture": {"name": spec.name, "path": os.path.abspath(spec.origin), "config_hash": spec.config_hash(),
                    "config": spec.config_dict()},
        "seq_len": spec.seq_len,
        "seed": spec.seed,
        "budget_tokens": spec.budget_tokens,
        "samples": total,
        "tokens": total * spec.seq_len,
        "tokenizer": {"path": os.path.join(os.path.dirname(first.tokens_manifest), tok["path"]),
                      "sha256": tok["sha256"], "vocab_size": tok["vocab_size"], "eod_id": tok["eod_id"],
                      "dtype": tok["dtype"], "special_tokens": tok.get("special_tokens", {})},
        "sources": out_sources,
        "phases": phases,
    }


def _location(table: pa.Table) -> str | None:
    return next((c for c in LOCATION_COLUMNS if c in table.column_names), None)


def _replace_dir(tmp: str, out_dir: str) -> None:
    """Swap the finished plan in: an interrupted plan never leaves a half-written folder behind."""
    if os.path.exists(out_dir):
        old = f"{out_dir.rstrip(os.sep)}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(out_dir)) or ".", exist_ok=True)
        os.rename(tmp, out_dir)
