"""Ray for the LLM world: sampling and scoring as Ray tasks, student training as a Ray Train
`TorchTrainer` (Train V2) whose workers wrap DeepSpeed ZeRO-2.

The only module of the LLM world that imports Ray. `RayBackend` implements the backend protocol of
`adk_ray.pipeline.llm_chain` (sample / score / train), calling the pure world functions in Ray workers:

    sample  the chunks that have no part yet, split over `sample_workers` tasks (default one per GPU of the
            cluster, or one per CPU); every task runs `worlds.llm.sampling.sample_shard`, writing a Parquet
            part per chunk as it goes.
    score   the set's parts split over tasks running `worlds.llm.metrics.score_dataset` (part by part).
    align   `TorchTrainer(align.num_workers)`: each worker wraps the policy (PPO: and its value head) with
            DeepSpeed and runs `worlds.llm.align.run_align` (PAD: `worlds.llm.pad_kd.run_pad`) on its share.
            At every align.checkpoint_every-th iteration all ranks save `align.save_align_state` (DeepSpeed
            checkpoint, random states, step and curve) and report it; a restarted group
            (FailureConfig(max_failures)) loads the latest one and continues from that iteration.
    train   `TorchTrainer(num_workers)`: each worker builds the student, wraps it with DeepSpeed (ZeRO-2,
            bf16 on GPU; gloo and fp32 on CPU) and runs `worlds.llm.train.train_loop` on its slice of
            the batches `worlds.llm.train.student_batches` cuts from the token set, streamed as a Ray
            Data dataset (`token_dataset`, one per student, read whole by every rank). Every
            `checkpoint_every` steps all ranks save a DeepSpeed checkpoint (model, their optimizer partition,
            LR schedule, step) and report it; Ray merges the ranks' files into one checkpoint directory.
            A restarted worker group (FailureConfig(max_failures=1)) resumes from the latest one. Several
            independent students (p'' and p_target) share one run, trained one after the other.

    ray.init(...)
    run_distillation_chain("tiny", seed=0, workdir="w", backend=RayBackend())

Models and data sets are locations (`adk_ray.storage`): local paths on one machine or a shared filesystem,
or URIs on object storage (s3://, gs://), which every node reads (models through a node-local copy).
Ray Train's checkpoints go to the same storage (`RunConfig(storage_path, storage_filesystem)`).
"""
from __future__ import annotations

import functools
import gc
import json
import logging
import math
import os
import posixpath
import sys
import tempfile
import time
from typing import Callable

import numpy as np
import ray
import ray.data
import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from adk_ray import storage
from adk_ray.pipeline.cache import stage_key
from adk_ray.worlds.llm import data as token_data
from adk_ray.worlds.llm.metrics import score_dataset
from adk_ray.worlds.llm.models import Vocab
from adk_ray.worlds.llm.presets import LLMPreset
from adk_ray.worlds.llm.sampling import dataset_meta, num_chunks, sample_shard, split_chunks
from adk_ray.worlds.llm.backends import (TrainJob, is_trained, read_train_info, scoring_dtype, sequence_width,
                                         student_info, write_train_info)

PROGRESS = "progress.json"
TRAIN_CONSOLE_LEVEL = "WARNING"
"""Ray Train's lowest level on the console. Its INFO lines (each report, checkpoint and worker group: ~20
per run, and a trial makes 4 or more runs) go to Train's log files only; the console keeps warnings and
the chain's one line per stage (`worlds._run_llm`)."""


def _gpu_freed(fn: Callable) -> Callable:
    """`fn` as a task that hands its cached GPU memory back when it returns: the process stays warm for
    the next task (`ray_options.WARM_WORKERS`), and the memory torch's allocator keeps would otherwise be
    unavailable to the training workers that run next on the same GPU."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        import torch  # as in _worker_setup: imported where a task or worker runs
        try:
            return fn(*args, **kwargs)
        finally:
            if torch.cuda.is_initialized():
                gc.collect()
                torch.cuda.empty_cache()
    return run


class RayBackend:
    """Runs the LLM world's heavy stages on the Ray cluster `ray.init` connected to."""

    def __init__(self, sample_workers: int | None = None, use_gpu: bool | None = None,
                 storage_path: str | None = None, max_failures: int = 1,
                 worker_hook: Callable[[dict], None] | None = None):
        """Training runs use the preset's train.num_workers Ray Train workers (it sets the global batch, so
        it is part of a student's cache key and not a backend knob).
        sample_workers: tasks per sampling / scoring stage (default: GPUs in the cluster, else num_workers).
        use_gpu: default whether the cluster has GPUs. storage_path: Ray Train storage (default:
        `<workdir>/ray_train`). max_failures: worker-group restarts per run (FailureConfig), each resuming
        from the run's latest reported checkpoint.
        worker_hook: called inside every Ray Train worker after each student-training step and after each
        alignment iteration (after that step's checkpoint, if any, is reported), with a dict: kind
        ('train' | 'align'), role, rank, world_size, step, resumed_from (the step the worker group
        restored, 0 on a fresh start), run_dir (the Ray Train run's storage folder). For monitoring, or for
        a test to inject a fault (the resume tests kill a worker from it); it must pickle (cloudpickle)."""
        self.sample_workers = sample_workers
        self._use_gpu, self.storage_path = use_gpu, storage_path
        self.max_failures, self.worker_hook = max_failures, worker_hook

    # -- resources ----------------------------------------------------------------------------
    @property
    def use_gpu(self) -> bool:
        if self._use_gpu is None:
            self._use_gpu = ray.cluster_resources().get("GPU", 0) > 0
        return self._use_gpu

    def _task_options(self) -> dict:
        # Outside any placement group: inside a Tune trial, tasks would otherwise be captured by the trial's
        # own (a driver-sized bundle with no room for them).
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        free = {"scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group=None)}
        return {"num_gpus": 1, "num_cpus": 1, **free} if self.use_gpu else {"num_cpus": 1, **free}

    def _n_tasks(self, preset: LLMPreset) -> int:
        if self.sample_workers:
            return self.sample_workers
        if self.use_gpu:
            return max(1, int(ray.cluster_resources().get("GPU", 1)))
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    # -- backend protocol -----------------------------------------------------------------------
    def sample(self, preset: LLMPreset, vocab: Vocab, model_dir: str, out_dir: str, n: int, temperature: float,
               seed: int) -> str:
        """The chunks without a part yet, split over one task per GPU (or CPU) of the cluster; each task
        writes a part per chunk as it draws it (`sampling.sample_shard`), so a killed stage redoes at most
        one chunk per task."""
        s = preset.sampling
        todo = sorted(set(range(num_chunks(n, s.chunk_size))) - token_data.finished_chunks(out_dir))
        task = ray.remote(_gpu_freed(sample_shard)).options(**self._task_options())
        dtype = s.dtype if self.use_gpu else "float32"
        refs = [task.remote(model_dir, out_dir, vocab, [todo[i] for i in share], n, s.chunk_size, s.max_new_tokens,
                            temperature, s.top_p, seed, dtype, None, s.compile and self.use_gpu)
                for share in split_chunks(len(todo), self._n_tasks(preset))]
        ray.get(refs)
        token_data.finish_dataset(out_dir, dataset_meta(model_dir, vocab, n, temperature, s.top_p, seed,
                                                        s.max_new_tokens, s.chunk_size))
        return out_dir

    def score(self, preset: LLMPreset, vocab: Vocab, model_dir: str, data_dir: str) -> np.ndarray:
        """Tasks over contiguous runs of the set's parts, each streaming its parts batch by batch
        (`metrics.score_dataset`); the per-sequence scores come back in (chunk, row) order."""
        parts = token_data.part_files(data_dir)
        task = ray.remote(_gpu_freed(score_dataset)).options(**self._task_options())
        dtype = scoring_dtype(preset, self.use_gpu)      # fp32 always: metrics and the reward threshold
        refs = [task.remote(model_dir, data_dir, vocab, dtype, None, 64, [parts[i] for i in share])
                for share in split_chunks(len(parts), self._n_tasks(preset))]
        return np.concatenate(ray.get(refs)) if refs else np.zeros(0)

    def train(self, preset: LLMPreset, vocab: Vocab, jobs: list[TrainJob]) -> None:
        """One TorchTrainer run trains `jobs` one after the other (one worker-group start for all)."""
        jobs = [j for j in jobs if not is_trained(j.out_dir)]
        if not jobs:
            return
        t0 = time.perf_counter()
        # One data set per student ("train-<k>", k its index in `jobs`, the list the workers walk).
        datasets = {f"train-{k}": token_dataset(j.data_dir, preset.train.shuffle_window) for k, j in enumerate(jobs)}
        where, name = self._fit("train", train_students_worker, preset, vocab, jobs, preset.train.num_workers,
                                datasets=datasets)
        missing = [j.role for j in jobs if not is_trained(j.out_dir)]
        if missing:
            raise RuntimeError(f"Ray Train run {name} finished without students {', '.join(missing)}")
        for j in jobs:                                     # where the run's checkpoints live, for the record
            info = read_train_info(j.out_dir)
            write_train_info(j.out_dir, {**info, "ray_train_run": storage.join(where, name),
                                         "driver_wall_seconds": time.perf_counter() - t0})

    def align(self, preset: LLMPreset, vocab: Vocab, jobs: list) -> None:
        """One TorchTrainer run of preset.align.num_workers DeepSpeed workers runs the aligners one after
        the other; each worker samples its share of every batch."""
        from adk_ray.worlds.llm.align import is_aligned
        self._fit_unfinished("align", align_worker, preset, vocab, jobs, is_aligned, "aligning")

    def pad(self, preset: LLMPreset, vocab: Vocab, jobs: list) -> None:
        """PAD fine-tuning as a TorchTrainer run of preset.align.num_workers DeepSpeed workers."""
        from adk_ray.worlds.llm.pad_kd import is_pad_done
        self._fit_unfinished("pad", pad_worker, preset, vocab, jobs, is_pad_done, "PAD students")

    def _fit_unfinished(self, kind: str, worker, preset: LLMPreset, vocab: Vocab, jobs: list,
                        done: Callable[[str], bool], what: str) -> None:
        """`_fit` over the jobs whose out_dir is not `done` yet; then every one must be."""
        jobs = [j for j in jobs if not done(j.out_dir)]
        if jobs:
            _, name = self._fit(kind, worker, preset, vocab, jobs, preset.align.num_workers)
            missing = [j.role for j in jobs if not done(j.out_dir)]
            if missing:
                raise RuntimeError(f"Ray Train run {name} finished without {what} {', '.join(missing)}")

    def _fit(self, kind: str, worker, preset: LLMPreset, vocab: Vocab, jobs: list, workers: int,
             datasets: dict | None = None) -> tuple[str, str]:
        """A TorchTrainer of `workers` workers running `worker` over `jobs`; returns (storage, run name).
        `datasets` (name: Ray Data dataset) go to every worker whole and in order (`ordered_ingest`)."""
        first = storage.canonical(jobs[0].out_dir)
        where = self.storage_path or storage.join(posixpath.dirname(posixpath.dirname(first.rstrip("/"))), "ray_train")
        fs, path = storage.resolve(where)
        name = f"{kind}-" + stage_key("ray_train", {"out": [storage.canonical(j.out_dir) for j in jobs]})[:16]
        config = {"preset": preset, "vocab": vocab, "jobs": jobs, "hook": self.worker_hook,
                  "run_dir": storage.join(where, name)}
        # Ray Train keeps its checkpoints on the same storage as every other artefact (any node resumes
        # a run), through the filesystem adk_ray built for it (endpoint and timeouts included).
        trainer = TorchTrainer(
            worker, train_loop_config=config,
            **({"datasets": datasets, "dataset_config": ordered_ingest()} if datasets else {}),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=self.use_gpu),
            run_config=RunConfig(name=name, storage_path=path, storage_filesystem=fs,
                                 failure_config=FailureConfig(max_failures=self.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 logging_config=LoggingConfig(log_level=TRAIN_CONSOLE_LEVEL)))
        trainer.fit()
        return where, name


def token_dataset(directory: str, rows_per_read: int) -> "ray.data.Dataset":
    """A token set (`worlds.llm.data`) as a Ray Data dataset of its Parquet parts, rows in (chunk, row)
    order: columns tokens, chunk, row (the order is checked again where it is consumed).

    Read with Ray Data's first Parquet datasource (`use_datasource_v2` off for this read): the second one
    buckets files round-robin by size, which does not keep the files' order; the first one splits the
    sorted file list into contiguous read tasks. Read tasks take no CPU: the training workers may hold
    every CPU of the cluster (the tiny preset's 2 workers on a 2-CPU Ray), where a 1-CPU read task would
    wait for ever; reading Parquet is light next to a training step. One read task per ~`rows_per_read`
    rows (the shuffle window: a task's blocks are about what a worker holds anyway), not Ray Data's
    default of one per part: a task costs ~0.1–0.5 s of scheduling, and the first window waited for
    196 of them (~100 s on 2 busy cores for 50 000 rows, benchmarks/llm_data_scale.py) against ~1 s
    for 4."""
    parts = token_data.part_files(directory)
    tasks = max(1, min(len(parts), math.ceil(token_data.num_rows(directory) / max(1, rows_per_read))))
    ctx = ray.data.DataContext.get_current()
    v2 = ctx.use_datasource_v2
    ctx.use_datasource_v2 = False
    try:
        ds = ray.data.read_parquet(parts, filesystem=token_data.filesystem(directory),
                                   columns=["tokens", "chunk", "row"], num_cpus=0, override_num_blocks=tasks)
    finally:
        ctx.use_datasource_v2 = v2
    ds.context.execution_options.preserve_order = True
    # A sweep shows one progress bar (its trials'); each worker's per-dataset bars would interleave with
    # it in the driver's output, several per student and epoch.
    ds.context.enable_progress_bars = False
    return ds


def ordered_ingest() -> ray.train.DataConfig:
    """Ray Train's data config for the token sets: no dataset is split (each rank reads the whole stream
    and keeps its own slice of each global batch, so the order is the same for any number of workers and
    equals the local backend's), blocks in order (preserve_order: a block that finishes early must not
    overtake one before it)."""
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(datasets_to_split=[], execution_options=options)


def _worker_setup() -> tuple[int, int, object]:
    """(rank, world size, device or None on CPU) of a Ray Train worker, with the env DeepSpeed reads."""
    import torch
    # Ray 2.60 logs each report under a logger named after its file (execution/context.py has
    # `logging.getLogger(__file__)`), which RunConfig's LoggingConfig, filtering `ray.train.*`, misses
    reports = sys.modules.get("ray.train.v2._internal.execution.context")
    if reports is not None:
        logging.getLogger(reports.__file__).setLevel(TRAIN_CONSOLE_LEVEL)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    os.environ.setdefault("LOCAL_RANK", str(ctx.get_local_rank()))
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world))
    if torch.cuda.is_available():
        return rank, world, ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    return rank, world, None


def _module_engine(module, preset: LLMPreset, world: int, device, kwargs: dict):
    """A DeepSpeed engine (the preset's ZeRO stage and bf16) over a fine-tuning stage's module."""
    from adk_ray.worlds.llm.engine import DeepSpeedModuleEngine
    return DeepSpeedModuleEngine(module, world_size=world, zero_stage=preset.train.zero_stage, bf16=preset.train.bf16,
                                 device=device, **kwargs)


def align_worker(config: dict) -> None:
    """One Ray Train worker of an alignment run: per unfinished AlignJob, a DeepSpeed engine over the
    policy (and value head) and the world's `run_align`. At each checkpoint iteration every rank saves its
    part of the run's state (`save_align_state`) into one reported Ray Train checkpoint; a restarted group
    finds it with `ray.train.get_checkpoint()` and continues the same job from that iteration (finished
    jobs are skipped by their align.json). Rank 0 writes the policy checkpoints and the record."""
    from adk_ray.worlds.llm.align import (build_align_module, engine_kwargs, finish_align, is_aligned,
                                          load_align_state, run_align, save_align_state)

    rank, world, device = _worker_setup()
    preset, vocab, hook = config["preset"], config["vocab"], config.get("hook")
    restored = ray.train.get_checkpoint()
    for k, job in enumerate(config["jobs"]):
        if is_aligned(job.out_dir):
            continue
        t0 = time.perf_counter()
        engine = _module_engine(build_align_module(job, preset, vocab), preset, world, device,
                                engine_kwargs(job, preset))
        start, curve = 0, []
        if restored:
            with restored.as_directory() as d:
                start, curve = load_align_state(d, engine, job, rank) or (0, [])

        def on_checkpoint(step: int, curve: list[dict], k=k, job=job, engine=engine) -> None:
            with tempfile.TemporaryDirectory() as d:
                save_align_state(d, engine, job, step, curve, rank)
                ray.train.report({"job": k, "role": job.role, "iteration": step, **curve[-1]},
                                 checkpoint=Checkpoint.from_directory(d))

        def on_iteration(row: dict, job=job, start=start) -> None:
            hook({"kind": "align", "role": job.role, "rank": rank, "world_size": world, "step": row["step"],
                  "resumed_from": start, "run_dir": config["run_dir"]})

        curve = run_align(job, preset, vocab, engine, rank, world, on_iteration=on_iteration if hook else None,
                          start=start, curve=curve, on_checkpoint=on_checkpoint)
        if rank == 0:
            finish_align(job, preset, curve)
        ray.train.report({"job": k, "role": job.role, "iterations": len(curve), "resumed_from": start,
                          "wall_seconds": time.perf_counter() - t0})      # a barrier: the record is on disk
        del engine


def pad_worker(config: dict) -> None:
    """One Ray Train worker of a PAD run: per unfinished PadJob, a DeepSpeed engine over the student and
    the world's `run_pad` (rank 0 saves the student)."""
    from adk_ray.worlds.llm.pad_kd import build_pad_module, is_pad_done, pad_engine_kwargs, run_pad

    rank, world, device = _worker_setup()
    preset, vocab = config["preset"], config["vocab"]
    for k, job in enumerate(config["jobs"]):
        if is_pad_done(job.out_dir):
            continue
        t0 = time.perf_counter()
        engine = _module_engine(build_pad_module(job, preset, vocab), preset, world, device,
                                pad_engine_kwargs(job, preset, world))
        curve = run_pad(job, preset, vocab, engine, rank, world)
        ray.train.report({"job": k, "role": job.role, "steps": len(curve), "wall_seconds": time.perf_counter() - t0})
        del engine


def train_students_worker(config: dict) -> None:
    """One Ray Train worker: for each job not yet finished, a DeepSpeed engine and the world's train loop.

    Job k's token set is the Ray Data dataset "train-<k>" (`token_dataset`, not split): every epoch each
    rank iterates the whole of it as Arrow batches and `student_batches` keeps the rank's slice of each
    global batch, so memory follows the shuffle window and the batch, not the set.

    Checkpoints (every preset.train.checkpoint_every steps) hold the DeepSpeed state of the current job
    plus progress.json {job, step}; a finished job's model is written by rank 0 straight to its out_dir
    (then every rank passes a report, so all ranks see it before moving on), which is how a restarted
    group knows to skip it. train.json records peak_rss_mb: rank 0's peak resident memory (ru_maxrss,
    the process's whole life, so a later job's figure includes the earlier ones') when the job ends.
    """
    import resource

    from adk_ray.worlds.llm.models import build_model, save_model
    from adk_ray.worlds.llm.train import student_batches, student_engine, total_steps, train_loop

    rank, world, device = _worker_setup()
    preset, vocab = config["preset"], config["vocab"]
    s = preset.train
    restored = ray.train.get_checkpoint()
    progress = None
    if restored:
        with restored.as_directory() as d:
            with open(os.path.join(d, PROGRESS)) as f:
                progress = json.load(f)
    hook = config.get("hook")

    for k, job in enumerate(config["jobs"]):
        if is_trained(job.out_dir):
            continue
        t0 = time.perf_counter()
        n = token_data.num_rows(job.data_dir)
        total = total_steps(n, s.per_device_batch * world, s.epochs)
        engine = student_engine(build_model(job.spec, vocab, job.seed), s, total, device, world_size=world)
        init_seconds = time.perf_counter() - t0
        start = 0
        if progress and progress["job"] == k:
            with restored.as_directory() as d:
                start = int(engine.load(d)["step"])
        t_steps = time.perf_counter()

        def metrics(step: int, loss: float) -> dict:
            return {"job": k, "role": job.role, "step": step, "loss": loss, "start_step": start,
                    "total_steps": total, "init_seconds": init_seconds,
                    "tokens_per_step": s.per_device_batch * world * sequence_width(preset, vocab),
                    "steps_seconds": time.perf_counter() - t_steps, "wall_seconds": time.perf_counter() - t0}

        def on_step(step: int, loss, lr: float, engine=engine) -> None:
            if s.checkpoint_every and step % s.checkpoint_every == 0 and step < total:
                with tempfile.TemporaryDirectory() as d:
                    engine.save(d, {"step": step})
                    if rank == 0:
                        with open(os.path.join(d, PROGRESS), "w") as f:
                            json.dump({"job": k, "role": job.role, "step": step}, f)
                    ray.train.report(metrics(step, float(loss)), checkpoint=Checkpoint.from_directory(d))
            if hook:
                hook({"kind": "train", "role": job.role, "rank": rank, "world_size": world, "step": step,
                      "resumed_from": start, "run_dir": config["run_dir"]})

        shard = ray.train.get_dataset_shard(f"train-{k}")
        # Ray Data batches of one global batch's rows: their boundaries do not matter (the stream is
        # re-cut into windows), their size bounds what is held beside the window.
        batches = student_batches(
            lambda shard=shard: shard.iter_batches(batch_format="pyarrow", batch_size=s.per_device_batch * world),
            n, s.per_device_batch, world, rank, job.seed, s.shuffle_window, start, total, vocab.pad_id,
            sequence_width(preset, vocab))
        loss = train_loop(engine, batches, start, total, on_step)
        final = {**metrics(total, loss), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if rank == 0:
            save_model(engine.module.model.float(), job.out_dir, student_info(job, preset))
            write_train_info(job.out_dir, {**final, "world_size": world,
                                           "engine": f"deepspeed-zero{s.zero_stage}"})
        ray.train.report(final)                          # a barrier: the model is on disk for every rank
        del engine, on_step                              # on_step holds the engine too
