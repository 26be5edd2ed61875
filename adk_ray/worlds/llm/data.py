"""Token data sets as Arrow: a directory of Parquet part files, one row per sequence.

Columns: `tokens` list<int32> (prompt + generated tokens, through EOS when one was drawn), `chunk` int32
(the sampling chunk that drew it) and `row` int32 (its index in the chunk), so a read is ordered the same
however many workers wrote the parts. Schema metadata (key `adk_ray`, JSON) records what made the set:
generating model id, temperature τ, top_p, seed, prompt ids, max_new_tokens, preset.

    import pyarrow.dataset as ds, glob; ds.dataset(glob.glob("DIR/*.parquet")).to_table()

A finished set has `dataset.json` (its metadata and row count), written last by `finish_dataset`.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from adk_ray.storage import write_json

META_KEY = b"adk_ray"
DONE = "dataset.json"


@dataclass
class TokenSet:
    """Sequences in memory: right-padded `tokens` [N, L] int32, `lengths` [N], and the set's metadata."""

    tokens: np.ndarray
    lengths: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def prompt_length(self) -> int:
        return len(self.meta.get("prompt_ids", ()))


def to_arrow(sequences: list[np.ndarray], chunks: list[int], rows: list[int], meta: dict) -> pa.Table:
    """A table of `sequences` (1-D int arrays of varying length) with the schema described above."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(sequences).astype(np.int32) if sequences else np.zeros(0, np.int32)
    tokens = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))
    schema = pa.schema([("tokens", pa.list_(pa.int32())), ("chunk", pa.int32()), ("row", pa.int32())],
                       metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()})
    return pa.Table.from_arrays([tokens, pa.array(chunks, pa.int32()), pa.array(rows, pa.int32())], schema=schema)


def write_part(directory: str, name: str, sequences: list[np.ndarray], chunks: list[int], rows: list[int],
               meta: dict) -> str:
    """One part file `<directory>/<name>.parquet`, written atomically (temp file + rename)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.parquet")
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    pq.write_table(to_arrow(sequences, chunks, rows, meta), tmp)
    os.replace(tmp, path)
    return path


def part_files(directory: str) -> list[str]:
    """The set's Parquet parts (temp files and dataset.json excluded), sorted."""
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".parquet"))


def open_dataset(directory: str) -> pads.Dataset:
    """The set as a pyarrow Dataset."""
    return pads.dataset(part_files(directory), format="parquet")


def finish_dataset(directory: str, meta: dict) -> None:
    """Mark a set complete (all parts written): dataset.json with its metadata and row count."""
    n = open_dataset(directory).count_rows()
    write_json(os.path.join(directory, DONE), {**meta, "num_rows": n})


def is_finished(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, DONE))


def read_meta(directory: str) -> dict:
    """The metadata stored in the set's Parquet schema."""
    raw = pq.read_schema(part_files(directory)[0]).metadata or {}
    return json.loads(raw[META_KEY]) if META_KEY in raw else {}


def head_sequences(directory: str, k: int) -> list[np.ndarray]:
    """The set's first k sequences in (chunk, row) order, read from chunk 0 only (a set of millions of rows
    is not loaded to show a few)."""
    import pyarrow.compute as pc
    table = open_dataset(directory).to_table(filter=(pc.field("chunk") == 0) & (pc.field("row") < k))
    table = table.sort_by([("row", "ascending")])
    return [np.asarray(x, dtype=np.int32) for x in table.column("tokens").to_pylist()]


def read_tokens(directory: str, pad_id: int, width: int | None = None) -> TokenSet:
    """The whole set, ordered by (chunk, row), right-padded with `pad_id` to `width` (default: longest)."""
    table = open_dataset(directory).to_table().sort_by([("chunk", "ascending"),
                                                                         ("row", "ascending")])
    col = table.column("tokens").combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    lengths = np.diff(offsets).astype(np.int64)
    width = int(width if width is not None else (lengths.max() if len(lengths) else 0))
    if len(lengths) and lengths.max() > width:
        raise ValueError(f"sequences up to {lengths.max()} tokens do not fit width {width}")
    tokens = np.full((len(lengths), width), pad_id, dtype=np.int32)
    mask = np.arange(width)[None, :] < lengths[:, None]
    tokens[mask] = values[offsets[0]:offsets[-1]]
    return TokenSet(tokens, lengths, read_meta(directory))
