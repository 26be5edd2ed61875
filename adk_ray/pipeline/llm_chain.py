"""The LLM world's distillation chain (paper §4.2, appendix C.1–C.2), the shared start of both pipelines:

    p* ──sample τ=1.0──▶ SFT ──▶ p' ──sample τ=0.95──▶ KD ──▶ p''        (K-A aligns p'')
                                  └──sample τ=0.8 ──▶ KD ──▶ p_target   (oracle: reward, target precision)
                                  (A-K aligns p', then distils it like p'')

`run_distillation_chain(preset, seed, workdir)` runs it and returns metric rows for p' (stage `p_prime`,
once per pipeline, as in the MoG world) and p'' (stage `p_dprime`, K-A), world `llm`. The reward's
folding threshold is computed here from p_target's own samples and stored beside its weights.

Every artefact is a directory under `workdir`, named by a hash of exactly what determines it (stage,
settings, input keys, seed), and reused when it is already complete: a second chain with the same
seed shares p*, p', p'' and p_target. The heavy work goes through a backend (`LocalBackend` in-process,
`adk_ray.service.llm_train.RayBackend` on Ray). The aligners and PAD are further `Chain` methods
(`align`, `pad`) that take and return model directories the same way; `adk_ray.pipeline.llm_trial` runs
both pipelines over them.
"""
from __future__ import annotations

import dataclasses
import io
import time
import zlib
from typing import Callable, Protocol

import numpy as np

from adk_ray.columns import PIPELINES
from adk_ray.pipeline.cache import stage_key
from adk_ray import storage
from adk_ray.pipeline.result import TrialResult
from adk_ray.worlds.llm import data as token_data
from adk_ray.worlds.llm import metrics as llm_metrics
from adk_ray.worlds.llm.models import MODEL_INFO, Vocab, resolve_vocab
from adk_ray.worlds.llm.presets import LLMPreset, ModelSpec, get_preset
from adk_ray.worlds.llm.backends import LocalBackend, TrainJob, is_trained, materialize

Progress = Callable[[str], None] | None
"""progress(message): called as stages start and finish."""
TEXT_SAMPLES = 4
"""Decoded sequences kept per token set and per evaluated model (researchers judge alignment by reading)."""


class Backend(Protocol):
    """Where the heavy stages run (see adk_ray.worlds.llm.backends)."""

    def sample(self, preset: LLMPreset, vocab: Vocab, model_dir: str, out_dir: str, n: int, temperature: float,
               seed: int) -> str: ...

    def score(self, preset: LLMPreset, vocab: Vocab, model_dir: str, data_dir: str) -> np.ndarray: ...

    def train(self, preset: LLMPreset, vocab: Vocab, jobs: list[TrainJob]) -> None: ...

    def align(self, preset: LLMPreset, vocab: Vocab, jobs: list) -> None:
        """Run `adk_ray.worlds.llm.align.AlignJob`s (K-A's and A-K's aligners come in one call)."""

    def pad(self, preset: LLMPreset, vocab: Vocab, jobs: list) -> None:
        """Run `adk_ray.worlds.llm.pad_kd.PadJob`s (PAD fine-tuning of seqkd students)."""


def derive_seed(seed: int, name: str) -> int:
    """A stage's own seed from the trial seed and the stage's name (independent streams per stage)."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]).generate_state(1)[0])


@dataclasses.dataclass
class Artefact:
    """A model or data set directory and the key it is stored under."""

    key: str
    path: str


class Chain:
    """The stages of one seed, each cached in `workdir` by key. Methods return Artefacts."""

    def __init__(self, preset: LLMPreset, seed: int, workdir: str, backend: Backend | None = None,
                 vocab: Vocab | None = None, progress: Progress = None):
        self.preset, self.seed, self.workdir = preset, int(seed), storage.canonical(workdir)
        self.vocab = vocab or load_or_resolve_vocab(preset, self.workdir)
        self.backend = backend or LocalBackend()
        self.progress = progress or (lambda msg: None)
        self.timings: dict[str, float] = {}
        self._target: tuple[str, object] | None = None      # p_target loaded in-process for text_samples

    # -- building blocks -------------------------------------------------------------------------
    def _timed(self, label: str, fn):
        self.progress(f"{label} ...")
        t = time.perf_counter()
        out = fn()
        self.timings[label] = time.perf_counter() - t
        self.progress(f"{label} done in {self.timings[label]:.1f}s")
        return out

    def truth(self) -> Artefact:
        """p*: built once per preset (its init seed is fixed, not the trial seed)."""
        spec = self.preset.truth
        key = stage_key("truth", {"spec": dataclasses.asdict(spec), "vocab": self.vocab.to_json()},
                        self.preset.truth_seed)
        path = storage.join(self.workdir, "models", f"truth-{key}")
        if not storage.exists(storage.join(path, MODEL_INFO)):
            self._timed("p* materialise", lambda: materialize(
                spec, self.vocab, self.preset.truth_seed, path,
                {"role": "truth", "preset": self.preset.name, "model_id": f"{self.preset.name}/truth"}))
        return Artefact(key, path)

    def dataset(self, model: Artefact, name: str, n: int, temperature: float,
                max_new_tokens: int | None = None) -> Artefact:
        """n samples of `model` at τ = temperature, seeded by (trial seed, name); responses of up to
        max_new_tokens (default: the sampling stage's)."""
        preset = self.preset
        if max_new_tokens is not None and max_new_tokens != preset.sampling.max_new_tokens:
            preset = preset.replace(sampling=dataclasses.replace(preset.sampling, max_new_tokens=max_new_tokens))
        s = preset.sampling
        seed = derive_seed(self.seed, name)
        settings = {"n": n, "temperature": temperature, "top_p": s.top_p, "max_new_tokens": s.max_new_tokens,
                    "chunk_size": s.chunk_size}
        key = stage_key("sample", settings, seed, (model.key,))
        path = storage.join(self.workdir, "data", f"{name}-{key}")
        if not token_data.is_finished(path):
            # parts of an interrupted run are kept: one per chunk, each drawn by its own seed, so the re-run
            # draws only the chunks that have none
            self._timed(f"sample {name} (n={n}, τ={temperature})",
                        lambda: self.backend.sample(preset, self.vocab, model.path, path, n, temperature, seed))
        return Artefact(key, path)

    def students(self, wanted: list[tuple[str, ModelSpec, Artefact]]) -> list[Artefact]:
        """Students (role, shape, data) trained by SFT / sequence-level KD on their data, in one backend
        call (on Ray: one worker group trains them one after the other)."""
        arts, jobs = [], []
        for role, spec, data in wanted:
            seed = derive_seed(self.seed, role)
            settings = {"spec": dataclasses.asdict(spec), "train": dataclasses.asdict(self.preset.train),
                        "width": self.preset.sampling.max_new_tokens}
            key = stage_key("train", settings, seed, (data.key,))
            path = storage.join(self.workdir, "models", f"{role}-{key}")
            arts.append(Artefact(key, path))
            if not is_trained(path):
                jobs.append(TrainJob(role, spec, data.path, path, seed))
        if jobs:
            self._timed(f"train {', '.join(j.role for j in jobs)}",
                        lambda: self.backend.train(self.preset, self.vocab, jobs))
        return arts

    def distil(self, role: str, student: Artefact, teacher: Artefact, method: str) -> Artefact:
        """The KD student of `method` (`kd_methods.KD_METHODS`) from the seqkd `student` of `teacher`: that
        student itself (seqkd), or it fine-tuned by PAD on the teacher's preferences over the student's own
        samples (PAD paper §4)."""
        from adk_ray.worlds.llm.kd_methods import kd_method
        if kd_method(method).preference_loss is None:
            return student
        return self.pad(role, student, teacher, method)

    def pad(self, role: str, student: Artefact, teacher: Artefact, method: str) -> Artefact:
        """PAD (`method` pad_vpd / pad_ppd) fine-tuning of the seqkd `student` on `teacher`'s preferences
        over the student's own samples (PAD paper §4)."""
        from adk_ray.worlds.llm.pad_kd import PadJob, is_pad_done
        seed = derive_seed(self.seed, f"{role}/{method}")
        key = stage_key("pad", {"method": method, "pad": dataclasses.asdict(self.preset.pad)}, seed,
                        (student.key, teacher.key))
        path = storage.join(self.workdir, "models", f"{role}-{method}-{key}")
        if not is_pad_done(path):
            job = PadJob(role=role, method=method, student_dir=student.path, teacher_dir=teacher.path, out_dir=path,
                         seed=seed)
            self._timed(f"{method} {role}", lambda: self.backend.pad(self.preset, self.vocab, [job]))
        return Artefact(key, path)

    def align(self, wanted: list[tuple[str, Artefact]], algorithm: str, beta: float, iterations: int,
              p_target: Artefact, reward: dict) -> list[tuple[Artefact, "object"]]:
        """Align each (role, policy) with π_ref = that policy, in one backend call. Returns per role the
        run's Artefact (key, directory of checkpoints, curve.json, align.json) and its AlignJob."""
        from adk_ray.worlds.llm.align import AlignJob, is_aligned
        from adk_ray.worlds.llm.aligners import aligner
        a, entry = self.preset.align, aligner(algorithm)
        out, todo = [], []
        for role, policy in wanted:
            seed = derive_seed(self.seed, role)
            pairs = ""
            inputs = [policy.key, p_target.key]
            if entry.offline:
                data = self.dataset(policy, f"{role}_pairs", 2 * entry.settings_of(a).offline_pairs, a.temperature,
                                    max_new_tokens=a.max_new_tokens)
                pairs, inputs = data.path, inputs + [data.key]
            settings = {"algorithm": algorithm, "beta": beta, "iterations": iterations, "reward": reward,
                        "align": dataclasses.asdict(a)}
            key = stage_key("align", settings, seed, tuple(inputs))
            path = storage.join(self.workdir, "aligned", f"{role}-{algorithm}-{key}")
            job = AlignJob(role=role, algorithm=algorithm, beta=beta, iterations=iterations, policy_dir=policy.path,
                           target_dir=p_target.path, reward={k: reward[k] for k in ("threshold", "scale", "c")},
                           out_dir=path, seed=seed, pairs_dir=pairs)
            out.append((Artefact(key, path), job))
            if not is_aligned(path):
                todo.append(job)
        if todo:
            self._timed(f"{algorithm} {', '.join(j.role for j in todo)} ({iterations} iterations)",
                        lambda: self.backend.align(self.preset, self.vocab, todo))
        return out

    def scores(self, model: Artefact, data: Artefact) -> np.ndarray:
        """Per-sequence mean log-likelihoods of `data` under `model`, cached as .npy."""
        path = storage.join(self.workdir, "scores", f"{model.key}-{data.key}.npy")
        try:
            return np.load(io.BytesIO(storage.read_bytes(path)))
        except FileNotFoundError:
            pass
        values = self._timed(f"score {storage.basename(data.path)} by {storage.basename(model.path)}",
                             lambda: self.backend.score(self.preset, self.vocab, model.path, data.path))
        buf = io.BytesIO()
        np.save(buf, values)
        storage.write_bytes(path, buf.getvalue())
        return values

    def reward(self, p_target: Artefact) -> dict:
        """τ_r = the fold_quantile of R_base over p_target's own samples; stored as reward.json beside it."""
        p = self.preset
        try:
            return llm_metrics.read_reward_spec(p_target.path)
        except FileNotFoundError:
            pass
        own = self.dataset(p_target, "p_target_self", p.sampling.threshold_samples, p.eval_temperature)
        ll = self.scores(p_target, own)
        spec = {"threshold": llm_metrics.reward_threshold(ll, p.reward_scale, p.reward_c, p.fold_quantile),
                "quantile": p.fold_quantile, "scale": p.reward_scale, "c": p.reward_c, "num_samples": int(len(ll)),
                "temperature": p.eval_temperature, "samples": storage.basename(own.path)}
        llm_metrics.write_reward_spec(p_target.path, spec)
        return spec

    def evaluate(self, name: str, model: Artefact, truth: Artefact, p_target: Artefact, held_out: Artefact,
                 reward: dict) -> dict:
        """The four metrics of one model (paper §4.1, eq. 5–6) on eval_samples sequences each."""
        own = self.eval_set(name, model)
        return llm_metrics.model_metrics(precision_ll=self.scores(truth, own), recall_ll=self.scores(model, held_out),
                                         target_ll=self.scores(p_target, own), reward=reward)

    def eval_set(self, name: str, model: Artefact) -> Artefact:
        """The model's τ = eval_temperature samples that its precision, target precision and reward read."""
        return self.dataset(model, f"{name}_eval", self.preset.sampling.eval_samples, self.preset.eval_temperature)

    def text_samples(self, data: Artefact, p_target: Artefact, reward: dict, k: int = TEXT_SAMPLES,
                     **tags) -> list[dict]:
        """The first k sequences of a token set as a reader sees them: decoded text (token ids for the
        synthetic vocab), generated length, whether EOS ended it, and its NLL under p_target and folded
        reward R (the numbers the metrics and aligners use, scored in fp32). `tags` (model, pipeline, ...)
        are copied into every row."""
        from adk_ray.worlds.llm.data import TokenSet, head_sequences
        from adk_ray.worlds.llm.models import decode_text, load_model, load_tokenizer
        seqs = head_sequences(data.path, k)
        if not seqs:
            return []
        if self._target is None or self._target[0] != p_target.path:
            # p_target in this process (CPU, fp32): a few rows do not justify a Ray task per set.
            self._target = (p_target.path, load_model(p_target.path, dtype="float32", device="cpu"))
        width = max(len(x) for x in seqs)
        tokens = np.full((len(seqs), width), self.vocab.pad_id, dtype=np.int32)
        for i, x in enumerate(seqs):
            tokens[i, :len(x)] = x
        lengths = np.array([len(x) for x in seqs])
        ll = llm_metrics.sequence_logliks(self._target[1], TokenSet(tokens, lengths, {}), len(self.vocab.prompt_ids))
        rewards = llm_metrics.folded_rewards(ll, reward["threshold"], reward["scale"], reward["c"])
        tok = (load_tokenizer(self.preset.tokenizer, cache_dir=self.workdir)
               if self.preset.tokenizer.source != "synthetic" else None)
        set_name = storage.basename(data.path).rsplit("-", 1)[0]
        # every row has every column (Arrow infers a table's columns from its first row)
        tags = {"model": "", "pipeline": "", "stage": "", "iterations": None, **tags}
        return [{"seed": self.seed, "token_set": set_name, "index": i, "text": decode_text(x, self.vocab, tok),
                 "num_tokens": int(len(x) - len(self.vocab.prompt_ids)), "ended": bool(x[-1] == self.vocab.eos_id),
                 "nll_target": float(-ll[i]), "reward": float(rewards[i]), **tags}
                for i, x in enumerate(seqs)]

    # -- the chain -------------------------------------------------------------------------------
    def cast(self) -> dict:
        """p* → p' (SFT) → p'' (seqkd at τ=kd_temperature) and p_target (seqkd at τ=target_temperature),
        the reward spec, and the data sets they came from: a dict of Artefacts plus 'reward'."""
        p, s = self.preset, self.preset.sampling
        truth = self.truth()
        sft_data = self.dataset(truth, "truth_train", s.train_samples, p.truth_temperature)
        held_out = self.dataset(truth, "truth_heldout", s.eval_samples, p.eval_temperature)
        p_prime, = self.students([("p_prime", p.p_prime, sft_data)])
        kd_data = self.dataset(p_prime, "p_prime_kd", s.train_samples, p.kd_temperature)
        target_data = self.dataset(p_prime, "p_prime_target", s.train_samples, p.target_temperature)
        p_dprime, p_target = self.students([("p_dprime", p.p_dprime, kd_data),
                                            ("p_target", p.p_target, target_data)])
        return {"truth": truth, "truth_train": sft_data, "truth_heldout": held_out, "p_prime": p_prime,
                "p_prime_kd": kd_data, "p_prime_target": target_data, "p_dprime": p_dprime, "p_target": p_target,
                "reward": self.reward(p_target)}

    def run(self) -> dict:
        """p* → p' → (p'', p_target) → reward → metrics of p' and p''. Returns a manifest (paths, metrics)."""
        c = self.cast()
        truth, sft_data, held_out, p_prime = c["truth"], c["truth_train"], c["truth_heldout"], c["p_prime"]
        kd_data, target_data, p_dprime, p_target = c["p_prime_kd"], c["p_prime_target"], c["p_dprime"], c["p_target"]
        reward = c["reward"]
        metrics = {name: self.evaluate(name, art, truth, p_target, held_out, reward)
                   for name, art in (("p_prime", p_prime), ("p_dprime", p_dprime))}
        return {"preset": self.preset.name, "seed": self.seed, "reward": reward, "metrics": metrics,
                "models": {"truth": truth.path, "p_prime": p_prime.path, "p_dprime": p_dprime.path,
                           "p_target": p_target.path},
                "data": {"truth_train": sft_data.path, "truth_heldout": held_out.path, "p_prime_kd": kd_data.path,
                         "p_prime_target": target_data.path},
                "timings": self.timings}


def load_or_resolve_vocab(preset: LLMPreset, workdir: str) -> Vocab:
    """The preset's Vocab, cached in workdir (loading a real tokenizer takes seconds)."""
    path = storage.join(workdir, f"vocab-{preset.name}-{stage_key('vocab', dataclasses.asdict(preset.tokenizer))}.json")
    try:
        return Vocab.from_json(storage.read_json_at(path))
    except FileNotFoundError:
        pass
    vocab = resolve_vocab(preset.tokenizer)
    storage.write_json_at(path, vocab.to_json(), indent=None, sort_keys=False)
    return vocab


def rows_from_manifest(manifest: dict, preset: LLMPreset) -> list[dict]:
    """Metric rows in the MoG world's column names: p' once per pipeline, p'' for K-A."""
    base = {"world": "llm", "preset": preset.name, "seed": manifest["seed"], "iterations": None, "step": None,
            "kd_temperature": preset.kd_temperature, "target_temperature": preset.target_temperature,
            "eval_samples": preset.sampling.eval_samples}
    m = manifest["metrics"]
    return ([{**base, "pipeline": pl, "stage": "p_prime", **m["p_prime"]} for pl in PIPELINES]
            + [{**base, "pipeline": "K-A", "stage": "p_dprime", **m["p_dprime"]}])


def run_distillation_chain(preset_name: str | LLMPreset, seed: int, workdir: str, backend: Backend | None = None,
                           progress: Progress = None, **overrides) -> TrialResult:
    """p* samples → p' (SFT, τ=1.0) → p'' (KD, τ=0.95) and p_target (KD, τ=0.8) → reward threshold →
    metric rows for p' and p''. `backend` defaults to in-process (`LocalBackend`); pass
    `adk_ray.service.llm_train.RayBackend(...)` to run on Ray. `overrides` replace preset fields
    (`get_preset`). The manifest of the run (paths, reward, timings) is written to
    `<workdir>/chain-<preset>-seed<seed>.json`."""
    preset = preset_name if isinstance(preset_name, LLMPreset) else get_preset(preset_name, **overrides)
    chain = Chain(preset, seed, workdir, backend, progress=progress)
    manifest = chain.run()
    storage.write_json_at(storage.join(chain.workdir, f"chain-{preset.name}-seed{seed}.json"), manifest)
    return TrialResult(rows=rows_from_manifest(manifest, preset))
