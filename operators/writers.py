"""Arrow IPC shard writing: sorted by id, zstd, atomic (temporary name, then rename), reproducible."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

#: rows per record batch inside a shard; fixed so that the same rows always give the same bytes
SHARD_BATCH_ROWS = 1024


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as sorted, indented JSON under a temporary name, then rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def sort_by_id(table: pa.Table) -> pa.Table:
    if table.num_rows == 0:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_arrow(path: str, table: pa.Table, compression: str = "zstd") -> dict:
    """Write ``table`` as an Arrow IPC file at ``path`` atomically; return rows, bytes and sha256.

    The file is written under a unique temporary name in the same folder and renamed, so a retried or
    killed task never leaves a torn file behind. Batches are re-chunked to a fixed size and no
    metadata that varies between runs is written, so equal tables give byte-identical files.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
    table = table.replace_schema_metadata(None)
    try:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
            for batch in table.combine_chunks().to_batches(max_chunksize=SHARD_BATCH_ROWS):
                writer.write_batch(batch)
        digest = sha256_file(tmp)
        size = os.path.getsize(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return {"rows": table.num_rows, "bytes": size, "sha256": digest}


def read_arrow(path: str) -> pa.Table:
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all()
