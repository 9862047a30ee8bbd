"""Reading a training plan: the tokens of training sample N, and provenance in both directions.

``TrainingPlan(folder)`` opens ``train_manifest.json``; the index arrays and the token files are
memory-mapped on first use, so a trainer rank touches only the pages of its own samples.

Sample N (0-based, over all phases in order) is found as the trainer finds it:
phase p holds N -> ``i = N - first_sample`` -> source ``dataset_index[i]``, its k-th sample
``dataset_sample_index[i]`` -> row ``shuffle_index[k]`` of that source's ``sample_index`` -> the
``seq_len + 1`` tokens from (``document_index[start]``, offset) to the next row's position inclusive.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from mixtures.plan import KIND, MANIFEST_FILE, SCHEMA_VERSION
from pipelines.errors import UserError
from tokenizer.indexed import IndexedDataset


@dataclass
class Piece:
    """A run of one document's tokens inside a sample."""

    source: str
    document: int  # row of documents/<source>.arrow
    start: int  # first token of the document used
    length: int  # tokens used
    position: int  # where they start in the sample


class _Source:
    """One source's token files and document table."""

    def __init__(self, plan: TrainingPlan, name: str, info: dict[str, Any]):
        self.plan, self.name, self.info = plan, name, info
        self.first = [s["first_document"] for s in info["shards"]]
        self._datasets: dict[int, IndexedDataset] = {}

    def dataset(self, k: int) -> IndexedDataset:
        if k not in self._datasets:
            self._datasets[k] = IndexedDataset(self.info["shards"][k]["bin"])
        return self._datasets[k]

    def tokens(self, document: int, start: int, length: int) -> np.ndarray:
        k = bisect_right(self.first, document) - 1
        return self.dataset(k).get(document - self.first[k], start, length)

    @cached_property
    def table(self) -> pa.Table:
        with pa.memory_map(os.path.join(self.plan.folder, self.info["documents_table"])) as src:
            return ipc.open_file(src).read_all()

    @cached_property
    def sizes(self) -> np.ndarray:
        return self.table.column("tokens").to_numpy()


class TrainingPlan:
    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        path = os.path.join(self.folder, MANIFEST_FILE)
        try:
            with open(path, encoding="utf-8") as fh:
                self.manifest = json.load(fh)
        except FileNotFoundError:
            raise UserError(f"{path}: no training manifest (make one with `smelter mix`)") from None
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read: {e}") from None
        if self.manifest.get("kind") != KIND or self.manifest.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"{path}: not a smelter training manifest of schema {SCHEMA_VERSION}")
        self.seq_len: int = self.manifest["seq_len"]
        self.num_samples: int = self.manifest["samples"]
        self.phases: list[dict[str, Any]] = self.manifest["phases"]
        self.sources = {name: _Source(self, name, info) for name, info in self.manifest["sources"].items()}
        self._arrays: dict[str, np.ndarray] = {}
        self._firsts = [p["first_sample"] for p in self.phases]

    def __len__(self) -> int:
        return self.num_samples

    def array(self, rel: str) -> np.ndarray:
        if rel not in self._arrays:
            self._arrays[rel] = np.load(os.path.join(self.folder, rel), mmap_mode="r")
        return self._arrays[rel]

    # ----------------------------------------------------------------------------------------------
    # sample -> tokens and documents

    def phase_of(self, n: int) -> dict[str, Any]:
        if not 0 <= n < self.num_samples:
            raise IndexError(f"sample {n} is outside the plan's {self.num_samples:,} samples")
        return self.phases[bisect_right(self._firsts, n) - 1]

    def locate(self, n: int) -> tuple[dict[str, Any], str, int]:
        """(phase, source, row of the source's sample_index) of sample ``n``."""
        phase = self.phase_of(n)
        i = n - phase["first_sample"]
        blend = phase["blend"]
        source = blend["sources"][int(self.array(blend["dataset_index"])[i])]
        k = int(self.array(blend["dataset_sample_index"])[i])
        row = int(self.array(phase["sources"][source]["shuffle_index"])[k])
        return phase, source, row

    def pieces(self, n: int) -> list[Piece]:
        """The document runs that make up sample ``n``, in order (``seq_len + 1`` tokens in all)."""
        phase, source, row = self.locate(n)
        info = phase["sources"][source]
        return self._pieces(source, info["document_index"], info["sample_index"], row)

    def _pieces(self, source: str, doc_index_file: str, sample_index_file: str, row: int) -> list[Piece]:
        doc_index = self.array(doc_index_file)
        sample_index = self.array(sample_index_file)
        (p0, o0), (p1, o1) = (int(x) for x in sample_index[row]), (int(x) for x in sample_index[row + 1])
        sizes = self.sources[source].sizes
        out, position = [], 0
        for p in range(p0, p1 + 1):
            doc = int(doc_index[p])
            start = o0 if p == p0 else 0
            end = o1 + 1 if p == p1 else int(sizes[doc])
            out.append(Piece(source, doc, start, end - start, position))
            position += end - start
        return out

    def sample(self, n: int) -> np.ndarray:
        """Training sample ``n``: ``seq_len + 1`` token ids (int64), inputs ``[:-1]``, labels ``[1:]``."""
        return self._tokens(self.pieces(n))

    def _tokens(self, pieces: list[Piece]) -> np.ndarray:
        return np.concatenate([self.sources[p.source].tokens(p.document, p.start, p.length)
                               for p in pieces]).astype(np.int64)

    # ----------------------------------------------------------------------------------------------
    # held-out samples: documents no phase draws from, one pass, in document order

    def heldout_samples(self, source: str) -> int:
        """How many held-out samples ``source`` has (0 when its held-out documents are too few)."""
        return self.manifest.get("heldout", {}).get("sources", {}).get(source, {}).get("samples", 0)

    def heldout_sample(self, source: str, k: int) -> np.ndarray:
        """Held-out sample ``k`` of ``source``: ``seq_len + 1`` token ids (int64)."""
        if not 0 <= k < self.heldout_samples(source):
            raise IndexError(f"{source} has {self.heldout_samples(source)} held-out samples, not {k + 1}")
        info = self.manifest["heldout"]["sources"][source]
        return self._tokens(self._pieces(source, info["document_index"], info["sample_index"], k))

    def document(self, source: str, number: int) -> dict[str, Any]:
        """Row ``number`` of the source's document table (id, url or path, tokens, quality_score ...)."""
        return self.sources[source].table.slice(number, 1).to_pylist()[0]

    # ----------------------------------------------------------------------------------------------
    # document -> samples

    def find_document(self, doc_id: str) -> tuple[str, int]:
        """(source, number) of the document with id ``doc_id``."""
        for name, src in self.sources.items():
            hits = pc.indices_nonzero(pc.equal(src.table.column("id"), doc_id)).to_numpy()
            if len(hits):
                return name, int(hits[0])
        raise UserError(f"no document {doc_id!r} in the plan's sources ({', '.join(self.sources)})")

    def samples_of(self, source: str, number: int) -> list[dict[str, Any]]:
        """Every training sample that reads document ``number`` of ``source``, with the phase and the
        document's token range it reads, sorted by sample."""
        out = []
        sizes = self.sources[source].sizes
        for phase in self.phases:
            info = phase["sources"].get(source)
            if not info or not info["samples"]:
                continue
            doc_index = self.array(info["document_index"])
            sample_index = self.array(info["sample_index"])
            positions = np.flatnonzero(doc_index == number)
            if not len(positions):
                continue
            starts = np.asarray(sample_index[:, 0], np.int64)
            rows_of = {}
            for pos in positions:  # rows whose span [start row, next row] covers this position
                lo = int(np.searchsorted(starts[1:], pos, side="left"))
                hi = int(np.searchsorted(starts[:-1], pos, side="right")) - 1
                for r in range(lo, hi + 1):
                    rows_of.setdefault(r, []).append(int(pos))
            if not rows_of:
                continue
            used = np.asarray(self.array(info["shuffle_index"])[:info["samples"]])
            ks = np.flatnonzero(np.isin(used, np.fromiter(rows_of, np.int64)))
            if not len(ks):
                continue
            k = self.phases.index(phase)
            names = phase["blend"]["sources"]
            mine = np.flatnonzero(self.array(phase["blend"]["dataset_index"]) == names.index(source))
            for kk in ks:
                row = int(used[kk])
                (p0, o0), (p1, o1) = sample_index[row], sample_index[row + 1]
                for pos in rows_of[row]:
                    start = int(o0) if pos == p0 else 0
                    end = int(o1) + 1 if pos == p1 else int(sizes[number])
                    out.append({"sample": phase["first_sample"] + int(mine[kk]), "phase": phase["name"],
                                "phase_index": k, "tokens": [start, end]})
        out.sort(key=lambda r: (r["sample"], r["tokens"][0]))
        return out
