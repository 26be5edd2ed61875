"""Student training streams its token set (`worlds.llm.train.epoch_batches` / `student_batches`).

Rows are tagged by their position in the set: row i is the one-token sequence [i], so a padded batch's
first column names the rows it holds. The order is a pure function of the stream, tested without Ray;
one test then checks that Ray Data's ingest in Ray Train workers delivers exactly that order.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow as pa
import pytest

from adk_ray.worlds.llm import data as token_data
from adk_ray.worlds.llm.train import batch_rows, epoch_batches, steps_per_epoch, student_batches, total_steps

SEED = 7


def tagged(n: int, part: int, chunk_size: int = 10) -> list[pa.Table]:
    """The set 0 … n−1 as tables of `part` rows (the last shorter), chunk/row columns in (chunk, row) order."""
    ids = np.arange(n)
    tables = []
    for a in range(0, n, part):
        seqs = [np.array([i], np.int32) for i in ids[a:a + part]]
        tables.append(token_data.to_arrow(seqs, [int(i) // chunk_size for i in ids[a:a + part]],
                                          [int(i) % chunk_size for i in ids[a:a + part]], {}))
    return tables


def rows_of(table: pa.Table) -> np.ndarray:
    return np.array([x[0] for x in table.column("tokens").to_pylist()])


def rank_rows(n, per_device, world, rank, window, start, total, part=7):
    return [b.tokens[:, 0].astype(np.int64).copy()
            for b in student_batches(lambda: iter(tagged(n, part)), n, per_device, world, rank, SEED, window,
                                     start, total, pad_id=-1, width=1)]


@pytest.mark.parametrize("n", [1, 5, 37, 64, 100])
@pytest.mark.parametrize("per_device,world", [(4, 1), (3, 2), (8, 2), (64, 1), (5, 3)])
def test_one_window_is_batch_rows_order(n, per_device, world):
    """A set of at most one window is trained in exactly the in-memory order of before (`batch_rows`),
    for every rank, epoch and resume step; the window bound itself (n == window) included."""
    g = per_device * world
    total = total_steps(n, g, 3)
    for window in (n, 16384):
        for start in sorted({0, 1, steps_per_epoch(n, g), total - 1}):
            if not 0 <= start < total:
                continue
            for rank in range(world):
                got = rank_rows(n, per_device, world, rank, window, start, total)
                want = [batch_rows(s, n, per_device, world, rank, SEED) for s in range(start, total)]
                assert len(got) == len(want) == total - start
                for s, (a, b) in enumerate(zip(got, want), start):
                    assert np.array_equal(a, b), (window, start, rank, s)


def epoch_stream(n, g, epoch, window, part=7):
    batches = list(epoch_batches(iter(tagged(n, part)), n, g, SEED, epoch, window))
    assert all(len(b) == g for b in batches)
    return np.concatenate([rows_of(b) for b in batches]), len(batches)


@pytest.mark.parametrize("n,g,window", [(1000, 48, 128), (1000, 40, 100), (300, 64, 50), (130, 200, 32)])
def test_windows_cover_every_row_once_per_epoch(n, g, window):
    """n > window: each epoch's first n positions hold every row once (the first floor(n/g)·g in full
    batches, the rest at the head of the last one), the wrap repeats the epoch's first rows, window w's
    rows fill positions [w·window, (w+1)·window) (a shuffle local to the window), epochs differ."""
    streams = []
    for epoch in range(3):
        rows, count = epoch_stream(n, g, epoch, window)
        assert count == steps_per_epoch(n, g)
        full = (n // g) * g
        assert len(set(rows[:full].tolist())) == full
        assert sorted(rows[:n].tolist()) == list(range(n))
        assert np.array_equal(rows[n:], rows[np.arange(len(rows) - n) % n])
        for w in range(0, n, window):
            assert sorted(rows[w:min(w + window, n)].tolist()) == list(range(w, min(w + window, n)))
        if n >= 2 * window:        # equal-length windows draw different permutations
            assert not np.array_equal(rows[:window], rows[window:2 * window] - window)
        streams.append(rows)
    assert not np.array_equal(streams[0], streams[1]) and not np.array_equal(streams[1], streams[2])
    assert not np.array_equal(streams[0][:window], np.arange(min(window, n)))       # shuffled at all


def test_order_does_not_depend_on_how_the_stream_is_chunked():
    """Parquet parts and Ray Data batches cut the stream differently: the batches must not change."""
    n, g, window = 500, 24, 64
    ref, _ = epoch_stream(n, g, 1, window, part=500)
    for part in (1, 7, 64, 65, 499):
        assert np.array_equal(epoch_stream(n, g, 1, window, part=part)[0], ref), part


def test_parquet_parts_stream_like_tables(tmp_path):
    """The same batches from real Parquet parts (`data.iter_parts`, one part per chunk) as from tables."""
    n, per_device, world, window = 230, 8, 2, 50
    for c in range(0, n, 40):
        ids = range(c, min(c + 40, n))
        token_data.write_part(str(tmp_path), token_data.part_name(c // 40), [np.array([i], np.int32) for i in ids],
                              [c // 40] * len(ids), list(range(len(ids))), {})
    token_data.finish_dataset(str(tmp_path), {})
    assert token_data.num_rows(str(tmp_path)) == n
    total = total_steps(n, per_device * world, 2)
    for rank in range(world):
        parquet = [b.tokens[:, 0].copy() for b in student_batches(
            lambda: token_data.iter_parts(str(tmp_path)), n, per_device, world, rank, SEED, window, 0, total, -1, 1)]
        tables = rank_rows(n, per_device, world, rank, window, 0, total)
        assert len(parquet) == total and all(np.array_equal(a, b) for a, b in zip(parquet, tables))


@pytest.mark.parametrize("n,window", [(600, 64), (70, 64), (64, 64)])
def test_resume_and_world_size_do_not_change_the_order(n, window):
    """Step s reads the same rows whether the run resumed at k < s or went straight through, and ranks'
    slices of a world of 2 are the halves of the one-process batch of the same global batch."""
    per_device, world = 6, 2
    total = total_steps(n, per_device * world, 3)
    straight = [rank_rows(n, per_device, world, r, window, 0, total) for r in range(world)]
    single = rank_rows(n, per_device * world, 1, 0, window, 0, total)
    for s in range(total):
        assert np.array_equal(np.concatenate([straight[0][s], straight[1][s]]), single[s])
    for k in (1, steps_per_epoch(n, per_device * world) + 3, total - 1):
        for r in range(world):
            resumed = rank_rows(n, per_device, world, r, window, k, total)
            assert len(resumed) == total - k
            assert all(np.array_equal(a, b) for a, b in zip(resumed, straight[r][k:]))


class CountingStream:
    """Tables of `part` rows handed out one at a time, counting the rows handed out."""

    def __init__(self, n: int, part: int):
        self.tables, self.read = tagged(n, part), 0

    def __iter__(self):
        for t in self.tables:
            self.read += len(t)
            yield t


@pytest.mark.parametrize("n", [600, 6000])
def test_rows_held_are_bounded_by_window_and_batch(n):
    """Memory follows the window, not the set: when a batch comes out, the rows read from the stream but
    not yet handed out in a batch are at most window + g (one-row input tables), for a set 10× larger
    too. (A reader that loaded the set first would hold n.)"""
    g, window = 32, 100
    stream = CountingStream(n, 1)
    handed, most = 0, 0
    for b in epoch_batches(iter(stream), n, g, SEED, 0, window):
        handed += len(b)
        most = max(most, stream.read - min(handed, n))
    assert stream.read == n
    assert 0 < most <= window + g, most


def test_a_stream_out_of_chunk_row_order_is_refused():
    tables = tagged(40, 10)
    with pytest.raises(ValueError, match="order"):
        list(epoch_batches(iter([tables[1], tables[0], *tables[2:]]), 40, 8, SEED, 0, 16))
    swapped = tables[0].take([0, 2, 1, *range(3, 10)])
    with pytest.raises(ValueError, match="order"):
        list(epoch_batches(iter([swapped, *tables[1:]]), 40, 8, SEED, 0, 16))


def test_a_stream_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="rows"):
        list(epoch_batches(iter(tagged(40, 10)), 41, 8, SEED, 0, 16))
    with pytest.raises(ValueError, match="rows"):
        list(epoch_batches(iter(tagged(40, 10)), 39, 8, SEED, 0, 16))


# -- through Ray Data in Ray Train workers --------------------------------------------------------------------

def _write_tagged(directory: str, n: int, part: int, offset: int = 0) -> None:
    for c, a in enumerate(range(0, n, part)):
        ids = range(a, min(a + part, n))
        token_data.write_part(directory, token_data.part_name(c), [np.array([offset + i], np.int32) for i in ids],
                              [c] * len(ids), list(range(len(ids))), {})
    token_data.finish_dataset(directory, {})


def _ingest_worker(config: dict) -> None:
    import ray.train
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    for k, n in enumerate(config["sizes"]):
        shard = ray.train.get_dataset_shard(f"train-{k}")
        total = total_steps(n, config["per_device"] * world, 2)
        got = [b.tokens[:, 0].tolist() for b in student_batches(
            lambda: shard.iter_batches(batch_format="pyarrow", batch_size=config["per_device"] * world), n,
            config["per_device"], world, rank, SEED, config["window"], config["start"], total, -1, 1)]
        with open(f"{config['out']}/job{k}-rank{rank}.json", "w") as f:
            json.dump(got, f)


@pytest.mark.slow
def test_ray_data_ingest_gives_every_rank_the_local_order(ray_local, tmp_path):
    """Each student's set as its own Ray Data dataset (`token_dataset`, `ordered_ingest`), read by 2 Ray
    Train workers: every rank trains on exactly the rows the local stream (`data.iter_parts`) gives it,
    over many small parts (many read tasks that could finish out of order) and two epochs, resumed mid-way."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from adk_ray.service.llm_train import ordered_ingest, token_dataset
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers cannot import tests/

    sizes, per_device, window, start = (700, 90), 8, 128, 3
    dirs = [str(tmp_path / f"set{k}") for k in range(len(sizes))]
    for k, (d, n) in enumerate(zip(dirs, sizes)):
        _write_tagged(d, n, 13, offset=0)
    out = tmp_path / "out"
    out.mkdir()
    TorchTrainer(_ingest_worker, train_loop_config={"sizes": sizes, "per_device": per_device, "window": window,
                                                    "start": start, "out": str(out)},
                 datasets={f"train-{k}": token_dataset(d, 100) for k, d in enumerate(dirs)},
                 dataset_config=ordered_ingest(), scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(name="ingest", storage_path=str(tmp_path / "ray_train"))).fit()
    for k, (d, n) in enumerate(zip(dirs, sizes)):
        total = total_steps(n, per_device * 2, 2)
        for rank in range(2):
            local = [b.tokens[:, 0].tolist() for b in student_batches(
                lambda: token_data.iter_parts(d), n, per_device, 2, rank, SEED, window, start, total, -1, 1)]
            with open(out / f"job{k}-rank{rank}.json") as f:
                assert json.load(f) == local, (k, rank)
            assert len(local) == total - start
