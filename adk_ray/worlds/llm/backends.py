"""Stage functions of the LLM world and the in-process backend that runs them without Ray.

A backend does the three heavy things a pipeline asks for, each on models and data sets on disk:

    sample(preset, vocab, model_dir, out_dir, n, temperature, seed)   a finished Arrow token set
    score(preset, vocab, model_dir, data_dir) -> per-sequence mean log-likelihoods
    train(preset, vocab, jobs)        saved students (save_pretrained + model.json + train.json), one per
                                      TrainJob; independent students (p'' and p_target) come in one call
    align(preset, vocab, jobs)        aligner runs (align.AlignJob): checkpoints, curve, selection record
    pad(preset, vocab, jobs)          PAD fine-tuned students (pad_kd.PadJob)

`LocalBackend` does them in this process (plain torch, one device); `adk_ray.service.llm_train.RayBackend`
does the same with Ray tasks for sampling and scoring and a Ray Train `TorchTrainer` of DeepSpeed workers
for training. Both call the pure functions of this package, so results agree up to floating point.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import torch

from adk_ray import storage
from adk_ray.worlds.llm import data as token_data
from adk_ray.worlds.llm import metrics as llm_metrics
from adk_ray.worlds.llm.engine import TorchEngine
from adk_ray.worlds.llm.models import Vocab, build_model, count_params, save_model
from adk_ray.worlds.llm.presets import LLMPreset, ModelSpec
from adk_ray.worlds.llm.sampling import dataset_meta, num_chunks, sample_shard
from adk_ray.worlds.llm.train import student_batches, student_engine, total_steps, train_loop

TRAIN_INFO = "train.json"
RESUME_DIR = "resume"      # LocalBackend: an aligner's latest resume state, inside its out_dir


def materialize(spec: ModelSpec, vocab: Vocab, seed: int, out_dir: str, info: dict) -> str:
    """Build (or load) a model and save it as a model directory the other stages load by path."""
    model = build_model(spec, vocab, seed)
    return save_model(model, out_dir, {**info, "source": spec.source, "name": spec.name, "init_seed": seed,
                                       "num_params": count_params(model)})


def student_info(job: "TrainJob", preset: LLMPreset) -> dict:
    """model.json of a trained student."""
    return {"role": job.role, "preset": preset.name, "seed": job.seed,
            "model_id": f"{preset.name}/{job.role}/{storage.basename(job.out_dir)}", "source": job.spec.source,
            "name": job.spec.name, "teacher_data": storage.basename(job.data_dir)}


def write_train_info(model_dir: str, info: dict) -> None:
    """train.json (steps, losses, resume point, timings): written last, it marks the student complete."""
    storage.write_json_at(storage.join(model_dir, TRAIN_INFO), info)


def read_train_info(model_dir: str) -> dict:
    return storage.read_json_at(storage.join(model_dir, TRAIN_INFO))


def sequence_width(preset: LLMPreset, vocab: Vocab) -> int:
    """Every padded batch is [B, prompt + max_new_tokens]: one static shape per run."""
    return len(vocab.prompt_ids) + preset.sampling.max_new_tokens


def device_for(preset: LLMPreset) -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sampling_dtype(preset: LLMPreset, on_gpu: bool | None = None) -> str:
    """The dtype models sample in: the preset's (bf16) on a GPU, fp32 on CPU."""
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    return preset.sampling.dtype if on_gpu else "float32"


def scoring_dtype(preset: LLMPreset, on_gpu: bool | None = None) -> str:
    """The dtype models score in: always fp32. Scores are the metrics and, under p_target, the reward,
    which exponentiates the NLL and is folded at a 90th-percentile threshold: bf16 weights and logits (8
    bits of mantissa) shift per-sequence scores enough to reorder samples around τ_r
    (tests/test_llm_gguf.py measures it). The sampling dtype may be bf16; the numbers reported never are."""
    return "float32"


@dataclass(frozen=True)
class TrainJob:
    """One student to train: `spec` on the token set `data_dir`, saved to `out_dir`."""

    role: str
    spec: ModelSpec
    data_dir: str
    out_dir: str
    seed: int


def is_trained(model_dir: str) -> bool:
    """A student directory is complete once train.json is written (after the weights)."""
    return storage.exists(storage.join(model_dir, TRAIN_INFO))


def resume_dir(out_dir: str) -> str:
    """LocalBackend's resume states of an aligner run: inside its out_dir on a local disk; for an out_dir on
    object storage, in this machine's local dir (one process runs the whole run, so it reads them back)."""
    if not storage.is_uri(out_dir):
        return os.path.join(out_dir, RESUME_DIR)
    return os.path.join(storage.local_dir(), RESUME_DIR, hashlib.sha256(out_dir.encode()).hexdigest()[:24])


class LocalBackend:
    """Runs every stage in this process, on the GPU when there is one. Training uses the global batch of
    the preset's num_workers (per_device_batch × num_workers) in one process, so it visits the same rows
    per step as a Ray Train run of that many workers."""

    def sample(self, preset: LLMPreset, vocab: Vocab, model_dir: str, out_dir: str, n: int, temperature: float,
               seed: int) -> str:
        s = preset.sampling
        chunks = list(range(num_chunks(n, s.chunk_size)))
        on_gpu = torch.cuda.is_available()
        sample_shard(model_dir, out_dir, vocab, chunks, n, s.chunk_size, s.max_new_tokens, temperature, s.top_p,
                     seed, dtype=sampling_dtype(preset), compile=s.compile and on_gpu)
        token_data.finish_dataset(out_dir, dataset_meta(model_dir, vocab, n, temperature, s.top_p, seed,
                                                        s.max_new_tokens, s.chunk_size))
        return out_dir

    def score(self, preset: LLMPreset, vocab: Vocab, model_dir: str, data_dir: str) -> np.ndarray:
        return llm_metrics.score_dataset(model_dir, data_dir, vocab, dtype=scoring_dtype(preset))

    def train(self, preset: LLMPreset, vocab: Vocab, jobs: list[TrainJob]) -> None:
        for job in jobs:
            if not is_trained(job.out_dir):
                self._train_one(preset, vocab, job)

    def align(self, preset: LLMPreset, vocab: Vocab, jobs: list) -> None:
        """Each unfinished run in turn; a run interrupted after a checkpoint iteration continues from the
        state saved then in out_dir/resume/step-NNNNNN/ (`align.save_align_state`), removed once it ends."""
        from adk_ray.worlds.llm.align import (build_align_module, engine_kwargs, finish_align, is_aligned,
                                              load_align_state, run_align, save_align_state)
        for job in jobs:
            if is_aligned(job.out_dir):
                continue
            engine = TorchEngine(build_align_module(job, preset, vocab), device=device_for(preset),
                                 **_torch_kwargs(engine_kwargs(job, preset)))
            state_dir = resume_dir(job.out_dir)
            saved = sorted(d for d in os.listdir(state_dir) if d.startswith("step-")) if os.path.isdir(state_dir) else []
            start, curve = (load_align_state(os.path.join(state_dir, saved[-1]), engine, job) if saved else None) or (0, [])

            def keep(step: int, curve: list[dict], job=job, engine=engine, state_dir=state_dir) -> None:
                # Written under a temporary name and renamed (atomic), older states removed after: a crash
                # at any point leaves at least one whole state.
                tmp, final = os.path.join(state_dir, f"tmp-{step:06d}"), os.path.join(state_dir, f"step-{step:06d}")
                shutil.rmtree(tmp, ignore_errors=True)
                save_align_state(tmp, engine, job, step, curve)
                os.replace(tmp, final)
                for old in os.listdir(state_dir):
                    if old != os.path.basename(final):
                        shutil.rmtree(os.path.join(state_dir, old), ignore_errors=True)

            finish_align(job, preset, run_align(job, preset, vocab, engine, start=start, curve=curve,
                                                on_checkpoint=keep))
            shutil.rmtree(state_dir, ignore_errors=True)

    def pad(self, preset: LLMPreset, vocab: Vocab, jobs: list) -> None:
        from adk_ray.worlds.llm.pad_kd import build_pad_module, is_pad_done, pad_engine_kwargs, run_pad
        for job in jobs:
            if not is_pad_done(job.out_dir):
                engine = TorchEngine(build_pad_module(job, preset, vocab), device=device_for(preset),
                                     **_torch_kwargs(pad_engine_kwargs(job, preset)))
                run_pad(job, preset, vocab, engine)

    def _train_one(self, preset: LLMPreset, vocab: Vocab, job: TrainJob) -> None:
        # One process stands in for preset.train.num_workers workers: same global batch, same rows per step.
        s = dataclasses.replace(preset.train, per_device_batch=preset.train.per_device_batch * preset.train.num_workers)
        t0 = time.perf_counter()
        n = token_data.num_rows(job.data_dir)
        total = total_steps(n, s.per_device_batch, s.epochs)
        engine = student_engine(build_model(job.spec, vocab, job.seed), s, total, device_for(preset))
        # The set streams part by part (memory: one shuffle window and a batch, whatever its size).
        batches = student_batches(lambda: token_data.iter_parts(job.data_dir), n, s.per_device_batch, 1, 0,
                                  job.seed, s.shuffle_window, 0, total, vocab.pad_id, sequence_width(preset, vocab))
        losses = []
        train_loop(engine, batches, 0, total,
                   on_step=lambda step, loss, lr: losses.append(float(loss)) if step % 10 == 0 or step == total
                   else None)
        save_model(engine.module.model.float(), job.out_dir, student_info(job, preset))
        write_train_info(job.out_dir, {"steps": total, "start_step": 0, "final_loss": losses[-1] if losses else None,
                                       "world_size": 1, "engine": "torch",
                                       "wall_seconds": time.perf_counter() - t0})


def _torch_kwargs(kwargs: dict) -> dict:
    """An engine_kwargs dict for TorchEngine: the per-rank micro-batch size is DeepSpeed's bookkeeping."""
    return {k: v for k, v in kwargs.items() if k != "micro_batch"}
