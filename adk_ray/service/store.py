"""A sweep's results directory, `<storage>/<sweep>/`, through pyarrow.fs (a local path, s3://, gs://, ...).

    sweep.json                  the resolved spec (the dashboard reads which axis varies where)
    data/<trial_id>.parquet     a finished trial's rows: the dataset, and the resume marker
    models/<trial_id>.parquet   the models' mixture parameters (written before the data file)
    samples/<trial_id>.parquet  LLM world: decoded text samples with reward and NLL (before the data file)
    cache/                      the world's shared-stage cache (local storage only)
    dashboard.html

Every file appears atomically: written under a dot-prefixed temporary name in the same directory
(which pyarrow.dataset and `*.parquet` globs skip), then moved into place. A killed driver can leave a
temporary file behind but never a half-written data file, so "the data file exists" is a sound
definition of "the trial finished".

Before a sweep writes anything, `open_checked` makes sure within STORAGE_TIMEOUT_S that the directory
can be written and holds no rows of another results schema.
"""
from __future__ import annotations

import json
import os
import posixpath
import threading
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from adk_ray import storage as storage_fs
from adk_ray.service.values import SpecError
from adk_ray.storage import StorageError, atomic_write, first_line, is_uri

DATA, MODELS, SAMPLES = "data", "models", "samples"
STORAGE_TIMEOUT_S = 20.0
"""How long opening, probing and schema-checking a storage may take before the sweep gives up on it."""
SCHEMA_KEY = b"adk_ray.schema_version"
"""Key of the results-schema version in every data file's Arrow schema metadata."""


def open_storage(storage: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) of a storage location; a bad one is the user's input error."""
    try:
        return storage_fs.open_storage(storage)
    except StorageError as e:
        raise SpecError(str(e)) from None


def storage_location(storage: str) -> str:
    """`storage` in the form every process can open: a URI without trailing slashes, a local path made absolute."""
    if is_uri(storage):
        scheme, _, rest = storage.partition("://")
        return f"{scheme}://{rest.rstrip('/')}"
    return os.path.abspath(os.path.expanduser(storage))


def open_checked(storage: str, sweep: str, schema: pa.Schema, timeout: float = STORAGE_TIMEOUT_S) -> "ResultStore":
    """The sweep's ResultStore once its directory is known to be writable and free of rows of another
    results schema; SpecError (one line) otherwise, and also when that takes longer than `timeout`.

    Hand-written deadline: pyarrow's filesystems retry on their own schedules (GCS without network for many
    minutes, silently), and no option bounds them all. The check runs in a daemon thread; one that
    overruns is abandoned, and the process can still exit.
    """
    outcome: dict = {}

    def check() -> None:
        try:
            store = ResultStore(storage, sweep)
            store.probe()
            store.check_schema(schema)
            outcome["store"] = store
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=check, name=f"storage-check {storage}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise SpecError(f"storage {storage_location(storage)} did not answer within {timeout:g} s (no network "
                        "route to it, a wrong endpoint, or credentials that cannot be found?)")
    if "error" in outcome:
        e = outcome["error"]
        if isinstance(e, (OSError, pa.ArrowException)):
            raise SpecError(f"storage {storage_location(storage)} cannot be used: {first_line(e)}") from None
        raise e
    return outcome["store"]


class ResultStore:
    def __init__(self, storage: str, sweep: str):
        self.storage = storage_location(storage)
        self.sweep = sweep
        self.fs, base = open_storage(self.storage)
        if not self.is_local and not base.strip("/"):
            raise SpecError(f"storage {storage!r} names no bucket; give SCHEME://BUCKET[/PREFIX]")
        self.root = posixpath.join(base, sweep)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def location(self) -> str:
        """The results directory as a path or URI (what the dashboard and the user are given)."""
        return f"{self.storage}/{self.sweep}"

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def data_path(self, trial_id: str) -> str:
        return self.path(DATA, f"{trial_id}.parquet")

    def models_path(self, trial_id: str) -> str:
        return self.path(MODELS, f"{trial_id}.parquet")

    # --------------------------------------------------------------------------------------- checks

    def probe(self) -> None:
        """Fail with a SpecError unless the results directory is writable; leaves nothing behind."""
        missing_top = None
        parent = self.root
        while parent and self.fs.get_file_info(parent).type == pafs.FileType.NotFound:
            missing_top, parent = parent, posixpath.dirname(parent)
            if parent in ("", "/"):
                break
        try:
            if self.fs.get_file_info(self.root).type == pafs.FileType.File:
                raise OSError(f"{self.root} is a file")
            self.fs.create_dir(self.root, recursive=True)
            probe = self.path(f".write-probe-{uuid.uuid4().hex}.tmp")
            with self.fs.open_output_stream(probe) as out:
                out.write(b"probe")
            self.fs.delete_file(probe)
        except (OSError, pa.ArrowException) as e:
            raise SpecError(f"storage {self.location} is not writable: {first_line(e)}") from None
        finally:
            if missing_top:
                try:
                    self.fs.delete_dir(missing_top)
                except (OSError, pa.ArrowException):
                    pass

    def check_schema(self, schema: pa.Schema) -> None:
        """SpecError if the directory holds data files of another results schema than `schema` (another
        version, or other columns): they could not be read as one dataset with the rows about to be added."""
        files = sorted(self._list(DATA))
        if not files:
            return
        with self.fs.open_input_file(files[0]) as f:
            stored = pq.read_schema(f)
        have, want = schema_version(stored), schema_version(schema)
        if have != want or not stored.equals(schema):
            what = f"results schema {have}" + (" with other columns" if have == want else "")
            raise SpecError(f"storage {self.location} holds rows of {what}; this code writes results schema "
                            f"{want}: give another --storage, or move that directory away")

    # --------------------------------------------------------------------------------------- reads

    def finished_ids(self) -> set[str]:
        """Trial ids with a data file."""
        return {posixpath.basename(p)[: -len(".parquet")] for p in self._list(DATA)}

    def read_data(self, trial_id: str) -> pa.Table:
        with self.fs.open_input_file(self.data_path(trial_id)) as f:
            return pq.read_table(f)

    def read_trial(self, trial_id: str) -> tuple[pa.Table, pa.Table | None, pa.Table | None] | None:
        """A finished trial's (data, models, samples) tables, None for a kind it did not write; None when
        it has no data file (it has not finished)."""
        def read(sub: str) -> pa.Table | None:
            path = self.path(sub, f"{trial_id}.parquet")
            if self.fs.get_file_info(path).type != pafs.FileType.File:
                return None
            with self.fs.open_input_file(path) as f:
                return pq.read_table(f)
        data = read(DATA)
        return None if data is None else (data, read(MODELS), read(SAMPLES))

    def failed_ids(self, trial_ids) -> list[str]:
        """Of `trial_ids` with a data file, those whose rows say status 'error'."""
        failed = []
        for tid in sorted(set(trial_ids) & self.finished_ids()):
            with self.fs.open_input_file(self.data_path(tid)) as f:
                status = pq.read_table(f, columns=["status"]).column("status").to_pylist()
            if "error" in status:
                failed.append(tid)
        return failed

    def read_json(self, name: str) -> dict | None:
        try:
            with self.fs.open_input_stream(self.path(name)) as f:
                return json.loads(f.read().decode())
        except (FileNotFoundError, pa.ArrowException):
            return None

    # --------------------------------------------------------------------------------------- writes

    def write_trial(self, trial_id: str, data: pa.Table, models: pa.Table | None,
                    samples: pa.Table | None = None) -> None:
        """Models and samples first: a data file is the promise that the trial is complete."""
        for sub, table in ((MODELS, models), (SAMPLES, samples)):
            if table is not None and table.num_rows:
                atomic_write(self.path(sub, f"{trial_id}.parquet"), lambda out, t=table: pq.write_table(t, out),
                             self.fs)
        atomic_write(self.data_path(trial_id), lambda out: pq.write_table(data, out), self.fs)

    def write_json(self, name: str, obj: dict) -> None:
        storage_fs.write_json(self.path(name), obj, self.fs, indent=2, sort_keys=False)

    def remove_temporaries(self) -> None:
        """Temp files a killed run left behind (they are invisible to readers, but clutter)."""
        for sub in (DATA, MODELS, SAMPLES, ""):
            for p in self._list(sub, suffix=".tmp"):
                if posixpath.basename(p).startswith("."):
                    try:
                        self.fs.delete_file(p)
                    except (OSError, pa.ArrowException):
                        pass

    def _list(self, sub: str, suffix: str = ".parquet") -> list[str]:
        selector = pafs.FileSelector(self.path(sub) if sub else self.root, allow_not_found=True)
        return [i.path for i in self.fs.get_file_info(selector)
                if i.type == pafs.FileType.File and i.path.endswith(suffix)
                and (suffix == ".tmp" or not posixpath.basename(i.path).startswith("."))]


def schema_version(schema: pa.Schema) -> int:
    """The results-schema version a data file's schema carries (files from before versioning: 1)."""
    return int((schema.metadata or {}).get(SCHEMA_KEY, b"1"))
