"""Files on any storage pyarrow opens (a local path, s3://, gs://, ...), written so that a reader never
sees half a file.

Every layer that writes shares these few functions: the results store, the LLM world's artefacts, the
dashboards. A write goes to a dot-prefixed temporary name in the same directory (which pyarrow.dataset
and `*.parquet` globs skip) and is then moved into place: a rename on a local disk, and on object
storage a single PUT becomes visible whole anyway.
"""
from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Callable

import pyarrow as pa
import pyarrow.fs as pafs


class StorageError(ValueError):
    """A storage location that cannot be opened; its text is one line for the user."""


def is_uri(location: str) -> bool:
    return "://" in location


S3_TIMEOUT_S = 5.0
"""Connect and request timeout of an S3 filesystem whose URI sets none (the AWS SDK's own defaults let one
request to an endpoint that accepts connections but never answers hang for about a minute)."""


def open_storage(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for a URI, or for a local path (made absolute: Ray workers have other cwds).

    s3:// takes its credentials, region and endpoint from the standard AWS variables (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL), which pyarrow's
    from_uri reads itself (docs/sweeps.md)."""
    if is_uri(location):
        try:
            fs, path = pafs.FileSystem.from_uri(location)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise StorageError(f"storage {location!r} cannot be opened: {first_line(e)}") from None
        return _bounded(fs), path
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))


def _bounded(fs: pafs.FileSystem) -> pafs.FileSystem:
    """`fs` with S3_TIMEOUT_S as connect and request timeout where it has none (-1). from_uri takes no
    timeouts, so the S3 filesystem is rebuilt from its own resolved options (its pickle recipe)."""
    if not isinstance(fs, pafs.S3FileSystem):
        return fs
    rebuild, (options,) = fs.__reduce__()
    if options.get("connect_timeout", 0) >= 0 and options.get("request_timeout", 0) >= 0:
        return fs
    for key in ("connect_timeout", "request_timeout"):
        if options.get(key, 0) < 0:
            options[key] = S3_TIMEOUT_S
    return rebuild(options)


def atomic_write(path: str, write: Callable, fs: pafs.FileSystem | None = None) -> str:
    """Create `path` whole: `write(stream)` fills a temporary sibling, which is then moved into place."""
    fs = fs or pafs.LocalFileSystem()
    directory, name = posixpath.split(path)
    fs.create_dir(directory, recursive=True)
    tmp = posixpath.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with fs.open_output_stream(tmp) as out:
            write(out)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except (OSError, pa.ArrowException):
            pass
        raise
    return path


def write_json(path: str, obj, fs: pafs.FileSystem | None = None, indent: int | None = 1,
               sort_keys: bool = True) -> str:
    """`obj` as JSON at `path`, atomically (values JSON cannot hold are written with str())."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=str).encode()
    return atomic_write(path, lambda out: out.write(text), fs)


def read_json(path: str, fs: pafs.FileSystem | None = None):
    """The JSON at `path`; FileNotFoundError when there is none."""
    fs = fs or pafs.LocalFileSystem()
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as e:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(path) from None
        raise StorageError(f"cannot read {path}: {first_line(e)}") from None


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
