"""Files on any storage pyarrow opens (a local path, s3://, gs://, ...), written so that a reader never
sees half a file.

Every layer that writes shares these few functions: the results store, the LLM world's artefacts, the
dashboards. A write goes to a dot-prefixed temporary name in the same directory (which pyarrow.dataset
and `*.parquet` globs skip) and is then moved into place: a rename on a local disk, and on object
storage a single PUT becomes visible whole anyway.
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
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


# -- locations: a local path or a URI, one string that every node of a cluster can open ------------------
#
# The LLM world keeps every artefact (token sets, models, scores, checkpoints) at a location under the
# sweep's storage. Parquet and JSON are read and written there directly; a model directory, which
# transformers and torch read from a local disk, is copied once per node into a node-local cache
# (`local_copy`) and written through a local staging directory (`staged`). Artefacts are immutable once
# their completion marker is written (their names hash everything that made them), so a node's copy
# never goes stale.

LOCAL_DIR_ENV = "ADK_RAY_LOCAL_DIR"
"""Environment variable naming this node's cache of copies from object storage (default
`<tempdir>/adk_ray_local`). Set per node (e.g. on `ray start`) when nodes share a temp dir."""


def join(location: str, *parts: str) -> str:
    """`location`/part/...: posix joins for URIs, os.path for local paths."""
    return posixpath.join(location, *parts) if is_uri(location) else os.path.join(location, *parts)


def canonical(location: str) -> str:
    """The same location written one way on every node: URIs as given, local paths absolute."""
    return location if is_uri(location) else os.path.abspath(os.path.expanduser(location))


def basename(location: str) -> str:
    return posixpath.basename(location.rstrip("/")) if is_uri(location) else os.path.basename(
        os.path.normpath(location))


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a location; filesystems are built once per bucket."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    scheme, rest = location.split("://", 1)
    bucket, _, inner = rest.partition("/")
    fs, base = _filesystem(f"{scheme}://{bucket}")
    return fs, posixpath.join(base, inner) if inner else base


_FILESYSTEMS: dict[str, tuple[pafs.FileSystem, str]] = {}


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if root not in _FILESYSTEMS:
        _FILESYSTEMS[root] = open_storage(root)
    return _FILESYSTEMS[root]


def exists(location: str) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def remove(location: str) -> None:
    """Delete a file or a directory tree; nothing when it is absent."""
    fs, path = resolve(location)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def write_bytes(location: str, data: bytes) -> str:
    fs, path = resolve(location)
    atomic_write(path, lambda out: out.write(data), fs)
    return location


def read_bytes(location: str) -> bytes:
    fs, path = resolve(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_json_at(location: str, obj, **kwargs) -> str:
    """`write_json` at a location (local path or URI)."""
    fs, path = resolve(location)
    write_json(path, obj, fs, **kwargs)
    return location


def read_json_at(location: str):
    """`read_json` at a location; FileNotFoundError when there is none."""
    fs, path = resolve(location)
    return read_json(path, fs)


def local_dir() -> str:
    return os.environ.get(LOCAL_DIR_ENV) or os.path.join(tempfile.gettempdir(), "adk_ray_local")


def local_copy(location: str) -> str:
    """A local directory with the files of `location`: the path itself when it is local; for a URI, this
    node's copy, downloaded once (into a temporary sibling, then renamed)."""
    if not is_uri(location):
        return os.path.abspath(location)
    scheme, rest = location.split("://", 1)
    target = os.path.join(local_dir(), scheme, rest.strip("/"))
    if os.path.isdir(target):
        return target
    fs, path = resolve(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise FileNotFoundError(location)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".tmp-copy-")
    pafs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    try:
        os.replace(tmp, target)
    except OSError:                                   # another process on this node copied it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def staged(location: str, last: tuple[str, ...] = ()):
    """Write a directory whole: yields a local temporary directory; when the block ends without error its
    files become `location` (replacing what was there). Locally one rename; for a URI an upload, with the
    files named in `last` (completion markers) uploaded after every other file."""
    if not is_uri(location):
        target = os.path.abspath(location)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".tmp-stage-")
        try:
            yield tmp
            if os.path.exists(target):
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    tmp = tempfile.mkdtemp(prefix="adk-stage-")
    try:
        yield tmp
        remove(location)
        upload_dir(tmp, location, last)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def upload_dir(local: str, location: str, last: tuple[str, ...] = ()) -> None:
    """Copy a local directory tree to `location`, the files named in `last` after all others."""
    fs, path = resolve(location)
    files = [os.path.relpath(os.path.join(d, f), local) for d, _, fs_ in os.walk(local) for f in fs_]
    files.sort(key=lambda rel: (os.path.basename(rel) in last, rel))
    for rel in files:
        dest = posixpath.join(path, rel.replace(os.sep, "/"))
        fs.create_dir(posixpath.dirname(dest), recursive=True)
        with open(os.path.join(local, rel), "rb") as src, fs.open_output_stream(dest) as out:
            shutil.copyfileobj(src, out, 1 << 22)
