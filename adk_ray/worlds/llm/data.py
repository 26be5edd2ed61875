"""Token data sets as Arrow: a directory of Parquet part files, one row per sequence, one part per sampling
chunk, at a location (`adk_ray.storage`: a local path or a URI such as s3://bucket/prefix).

Columns: `tokens` list<int32> (prompt + generated tokens, through EOS when one was drawn), `chunk` int32
(the sampling chunk that drew it) and `row` int32 (its index in the chunk), so a read is ordered the same
however many workers wrote the parts. Schema metadata (key `adk_ray`, JSON) records what made the set:
generating model id, temperature τ, top_p, seed, prompt ids, max_new_tokens, preset.

    import pyarrow.dataset as ds, glob; ds.dataset(glob.glob("DIR/*.parquet")).to_table()

A finished set has `dataset.json` (its metadata and row count), written last by `finish_dataset`. Sets
are read part by part (`iter_parts`, or Ray Data over `part_files` in the service) and padded per batch
(`pad_batch`); `read_tokens` loads a whole set, for small ones only.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from adk_ray import storage

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


def part_name(chunk: int) -> str:
    """The part file of sampling chunk `chunk` (one part per chunk, so a re-run redoes at most the chunks
    that have no part yet)."""
    return f"part-{int(chunk):06d}"


def write_part(directory: str, name: str, sequences: list[np.ndarray], chunks: list[int], rows: list[int],
               meta: dict) -> str:
    """One part file `<directory>/<name>.parquet` (a local path or a URI), written atomically (temp file +
    move; on object storage one PUT)."""
    fs, path = storage.resolve(storage.join(directory, f"{name}.parquet"))
    table = to_arrow(sequences, chunks, rows, meta)
    storage.atomic_write(path, lambda out: pq.write_table(table, out), fs)
    return storage.join(directory, f"{name}.parquet")


def part_files(directory: str) -> list[str]:
    """The set's Parquet parts as paths inside `filesystem(directory)` (temp files and dataset.json
    excluded), sorted: (chunk, row) order when each part holds one chunk or a contiguous run of them."""
    fs, path = storage.resolve(directory)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                  and not i.base_name.startswith("."))


def filesystem(directory: str) -> pafs.FileSystem:
    return storage.resolve(directory)[0]


def finished_chunks(directory: str) -> set[int]:
    """Chunks that already have their part (`part_name`); a re-run of a sampling stage skips them."""
    names = {posixpath.basename(f) for f in part_files(directory)}
    out = set()
    for name in names:
        stem = name[:-len(".parquet")]
        if stem.startswith("part-") and stem[5:].isdigit() and len(stem) == 11:
            out.add(int(stem[5:]))
    return out


def open_dataset(directory: str) -> pads.Dataset:
    """The set as a pyarrow Dataset (on the set's own filesystem)."""
    return pads.dataset(part_files(directory), format="parquet", filesystem=filesystem(directory))


def finish_dataset(directory: str, meta: dict) -> None:
    """Mark a set complete (all parts written): dataset.json with its metadata and row count."""
    n = open_dataset(directory).count_rows()
    storage.write_json_at(storage.join(directory, DONE), {**meta, "num_rows": n})


def is_finished(directory: str) -> bool:
    return storage.exists(storage.join(directory, DONE))


def num_rows(directory: str) -> int:
    """Sequences in a finished set (from dataset.json: no part is opened)."""
    return int(storage.read_json_at(storage.join(directory, DONE))["num_rows"])


def read_meta(directory: str) -> dict:
    """The metadata stored in the set's Parquet schema."""
    raw = pq.read_schema(part_files(directory)[0], filesystem=filesystem(directory)).metadata or {}
    return json.loads(raw[META_KEY]) if META_KEY in raw else {}


def head_sequences(directory: str, k: int) -> list[np.ndarray]:
    """The set's first k sequences in (chunk, row) order, read from chunk 0 only (a set of millions of rows
    is not loaded to show a few)."""
    import pyarrow.compute as pc
    table = open_dataset(directory).to_table(filter=(pc.field("chunk") == 0) & (pc.field("row") < k))
    table = table.sort_by([("row", "ascending")])
    return [np.asarray(x, dtype=np.int32) for x in table.column("tokens").to_pylist()]


def pad_batch(table: pa.Table, pad_id: int, width: int | None = None) -> TokenSet:
    """Rows of a table with a `tokens` column, right-padded with `pad_id` to `width` (default: longest):
    one batch's worth, so memory follows the batch, never the set."""
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
    return TokenSet(tokens, lengths, {})


def iter_parts(directory: str, columns: list[str] | None = None, parts: list[str] | None = None):
    """The set's parts one at a time as Arrow tables, in (chunk, row) order: a stream whose memory is one
    part (one sampling chunk), however large the set. `parts` (paths from `part_files`) restricts it."""
    fs = filesystem(directory)
    for path in part_files(directory) if parts is None else parts:
        table = pq.read_table(path, filesystem=fs, columns=columns)
        yield table.sort_by([("chunk", "ascending"), ("row", "ascending")])


def read_tokens(directory: str, pad_id: int, width: int | None = None) -> TokenSet:
    """The whole set in memory, ordered by (chunk, row), right-padded: for small sets only (the aligners'
    offline pairs, tests); training and scoring stream the set part by part (`iter_parts`)."""
    table = open_dataset(directory).to_table().sort_by([("chunk", "ascending"), ("row", "ascending")])
    out = pad_batch(table, pad_id, width)
    return TokenSet(out.tokens, out.lengths, read_meta(directory))
