"""The operator contract shared by readers, row steps and global steps.

A *reader* turns one input file into Arrow record batches on an executor. A *row step* maps a
``pyarrow.RecordBatch`` to one with the same rows in the same order plus the columns it adds; filters
never delete rows, they fill ``drop_reason``/``drop_step``. Consecutive row steps run fused inside one
``mapInArrow`` pass. A *global step* maps a Spark DataFrame to a DataFrame and may shuffle.

Every operator declares its YAML name, a pydantic model of its parameters (unknown keys rejected) and
the columns it reads, adds and consumes, so the planner can check a pipeline before Spark starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

#: Columns every row carries from the reader on.
DROP_REASON = "drop_reason"
DROP_STEP = "drop_step"
#: Optional: what a step says about one drop beyond its reason (the matched eval set and n-gram, the
#: id a near duplicate keeps); added by the first step that sets one, copied into the ledger's ``detail``.
DROP_DETAIL = "drop_detail"


class Params(BaseModel):
    """Base of every operator's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def doc_id(source: str, input_name: str, position: int | str) -> str:
    """Stable document id: a hash of source, input file (relative name) and record position."""
    key = f"{source}\x00{input_name}\x00{position}".encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()


@dataclasses.dataclass
class InputFile:
    """One input file of a source, as the driver lists it."""

    index: int  # position in the sorted listing: names the output part
    path: str  # as the executor opens it
    name: str  # relative to the glob's root: part of the stable ids


@dataclasses.dataclass
class TaskContext:
    """What a reader or step reports about one task besides its rows."""

    source: str
    input: InputFile
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def error(self, message: str, offset: int | None = None, **extra: Any) -> None:
        """Record damage in the input (a truncated gzip, a bad record) with where it happened."""
        self.errors.append({"file": self.input.path, "offset": offset, "error": message, **extra})


class Reader:
    """Reads one input file into batches. Subclasses set ``name``, ``Params`` and ``schema``."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]]
    #: the columns it produces besides ``id``/``source``/``drop_reason``/``drop_step``
    produces: ClassVar[tuple[str, ...]]
    #: the Arrow types of produced columns that are not strings (``html`` is binary whatever the reader)
    column_types: ClassVar[dict[str, pa.DataType]] = {}

    def __init__(self, params: Params):
        self.params = params

    def list_inputs(self, base_dir: str = ".") -> list[InputFile]:
        """Driver side: the input files, sorted, each with a stable relative name."""
        raise NotImplementedError

    def read(self, ctx: TaskContext, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Executor side: the rows of ``ctx.input`` in batches (never more than ``batch_size`` rows)."""
        raise NotImplementedError


class RowStep:
    """A step applied batch by batch inside the fused Arrow pass."""

    name: ClassVar[str]
    Params: ClassVar[type[Params]]
    reads: ClassVar[tuple[str, ...]] = ()
    adds: ClassVar[dict[str, pa.DataType]] = {}
    #: columns it takes out of the batch (e.g. ``extract`` consumes the raw ``html``)
    consumes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Params):
        self.params = params
        self._ready = False

    @classmethod
    def added(cls, params: Params) -> dict[str, pa.DataType]:
        """The columns this step adds with these parameters (``adds`` unless a parameter changes it)."""
        return cls.adds

    def setup(self) -> None:
        """Load heavy state (models, tokenizers). Called once per Python worker, lazily."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def __call__(self, batch: pa.RecordBatch, ctx: TaskContext) -> pa.RecordBatch:
        raise NotImplementedError


class GlobalStep:
    """A step over the documents of all sources as one Spark DataFrame (dedup); may shuffle.

    The runner gives :meth:`apply` the documents the row steps kept and earlier global steps did not
    remove, as a DataFrame with ``id``, ``source``, ``part`` (the input file's index) and the columns in
    ``reads`` (plus those of ``optional_reads`` that some source has; null where a source lacks them).
    It returns the documents to remove: ``id``, ``source``, ``part``, ``reason``, ``detail`` and
    ``dup_of`` (strings; ``dup_of`` the id of the document kept in its place). Small summaries for
    ``stats.json`` (cluster counts, histograms) go into :attr:`stats`; nothing proportional to the
    number of documents may be collected on the driver.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]]
    reads: ClassVar[tuple[str, ...]] = ()
    optional_reads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Params):
        self.params = params
        self.stats: dict[str, Any] = {}
        #: the sources in YAML order (set by the runner): "first in input order" starts there
        self.source_order: list[str] = []

    def apply(self, docs: Any) -> Any:  # pyspark.sql.DataFrame -> DataFrame of removals
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------
# Helpers for row steps


def alive(batch: pa.RecordBatch) -> list[bool]:
    """Which rows no earlier step has dropped (a step skips the others)."""
    return batch.column(DROP_REASON).is_null().to_pylist()


def update_batch(
    batch: pa.RecordBatch,
    step: str,
    set_columns: dict[str, pa.Array] | None = None,
    reasons: list[str | None] | None = None,
    remove: tuple[str, ...] = (),
    details: list[str | None] | None = None,
) -> pa.RecordBatch:
    """Return ``batch`` with columns added or replaced, columns removed, and new drops recorded.

    ``reasons[i]`` is the reason this step drops row ``i`` (None: kept), ``details[i]`` an optional
    note on that drop. A row an earlier step dropped keeps its first reason, step and detail.
    """
    names = list(batch.schema.names)
    arrays = list(batch.columns)
    fields = list(batch.schema)
    if reasons is not None and any(r is not None for r in reasons):
        old_reason = batch.column(DROP_REASON).to_pylist()
        old_step = batch.column(DROP_STEP).to_pylist()
        new_reason = [o if o is not None else r for o, r in zip(old_reason, reasons, strict=True)]
        new_step = [s if o is not None else (step if r is not None else None)
                    for o, s, r in zip(old_reason, old_step, reasons, strict=True)]
        arrays[names.index(DROP_REASON)] = pa.array(new_reason, pa.string())
        arrays[names.index(DROP_STEP)] = pa.array(new_step, pa.string())
        if details is not None:
            old_detail = (batch.column(DROP_DETAIL).to_pylist() if DROP_DETAIL in names
                          else [None] * batch.num_rows)
            new_detail = [d if o is not None else (n if r is not None else None)
                          for o, d, r, n in zip(old_reason, old_detail, reasons, details, strict=True)]
            if DROP_DETAIL in names:
                arrays[names.index(DROP_DETAIL)] = pa.array(new_detail, pa.string())
            else:
                names.append(DROP_DETAIL)
                arrays.append(pa.array(new_detail, pa.string()))
                fields.append(pa.field(DROP_DETAIL, pa.string()))
    for name, array in (set_columns or {}).items():
        if name in names:
            i = names.index(name)
            arrays[i], fields[i] = array, pa.field(name, array.type)
        else:
            names.append(name)
            arrays.append(array)
            fields.append(pa.field(name, array.type))
    keep = [i for i, n in enumerate(names) if n not in remove]
    return pa.RecordBatch.from_arrays([arrays[i] for i in keep], schema=pa.schema([fields[i] for i in keep]))
