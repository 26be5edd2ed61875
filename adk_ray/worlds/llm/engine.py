"""The optimiser engines of every fine-tuning stage of the LLM world (student training, aligners, PAD): a
module, its AdamW, LR schedule and gradient accumulation behind one small interface, so a stage's loop is
the same in one process (`TorchEngine`) and in a Ray Train worker wrapping DeepSpeed (`DeepSpeedModuleEngine`).

    out = engine(*args)            forward through the trained module (DeepSpeed: through its engine)
    engine.backward(loss)          backward of one micro-batch's loss (scaled by 1/grad_accum)
    engine.step()                  after every micro-batch: the optimiser steps only at an accumulation boundary
    engine.module                  the trained nn.Module (sample and score with it under torch.no_grad)
    engine.save(directory, client) module, optimiser, LR schedule, accumulation count and a small dict of the
                                   stage's own (e.g. its step), for resuming (every rank)
    engine.load(directory)         restore what `save` wrote, in place; returns the stage's dict

The module's forward is the stage's: a causal-LM loss for students (`train.CausalLMLoss`), a policy with a
value head for PPO, a student with its reference for PAD. `schedule` maps an optimiser update to the LR
multiplier (students: Warmup-Stable-Decay; aligners and PAD: a linear warmup).
"""
from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

TORCH_STATE = "engine.pt"
DEEPSPEED_TAG = "state"


def deepspeed_config(micro_batch: int, grad_accum: int, world_size: int, zero_stage: int, bf16: bool,
                     grad_clip: float, on_gpu: bool) -> dict:
    """The one DeepSpeed config of the LLM world (student training, aligners, PAD): ZeRO stage
    `zero_stage`, bf16 only on GPU, communication overlapped only on GPU. The bucket sizes and
    reduce-scatter are DeepSpeed's defaults, written out so a run records what it used."""
    return {
        "train_micro_batch_size_per_gpu": int(micro_batch),
        "gradient_accumulation_steps": int(grad_accum),
        "train_batch_size": int(micro_batch) * int(grad_accum) * int(world_size),
        "bf16": {"enabled": bool(on_gpu and bf16)},
        "zero_optimization": {"stage": int(zero_stage), "overlap_comm": bool(on_gpu), "contiguous_gradients": True,
                              "reduce_scatter": True, "allgather_bucket_size": int(5e8),
                              "reduce_bucket_size": int(5e8)},
        "gradient_clipping": float(grad_clip),
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }


def warmup_multiplier(update: int, warmup: int) -> float:
    """Linear warmup over `warmup` updates, then constant: (update + 1) / warmup, capped at 1."""
    return 1.0 if warmup <= 0 else min(1.0, (update + 1) / warmup)


def _schedule(schedule: Callable[[int], float] | None, warmup: int) -> Callable[[int], float]:
    return schedule if schedule is not None else (lambda u: warmup_multiplier(u, warmup))


class TorchEngine:
    """Single-process AdamW with gradient accumulation, gradient clipping and an LR schedule (`schedule`,
    else a linear warmup over `warmup` updates); on GPU optionally bf16 autocast and torch.compile."""

    def __init__(self, module: nn.Module, lr: float, grad_accum: int = 1, grad_clip: float = 1.0,
                 warmup: int = 0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, device: str | torch.device = "cpu",
                 schedule: Callable[[int], float] | None = None, autocast: bool = False, compile: bool = False):
        self.device = torch.device(device)
        self.module = module.to(self.device).train()
        self.forward = torch.compile(self.module) if compile else self.module
        self.autocast = bool(autocast) and self.device.type == "cuda"
        self.grad_accum, self.clip = int(grad_accum), float(grad_clip)
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=lr, betas=betas, eps=eps,
                                           weight_decay=weight_decay, fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(schedule, warmup))
        self.micro = 0

    def __call__(self, *args, **kwargs):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.forward(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> None:
        self.micro += 1
        if self.micro % self.grad_accum:
            return
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory: str, client: dict | None = None) -> None:
        """One file, engine.pt: module, AdamW moments and step counts, the LR schedule, the micro count and
        the stage's `client` dict."""
        os.makedirs(directory, exist_ok=True)
        torch.save({"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "micro": self.micro, "client": dict(client or {})},
                   os.path.join(directory, TORCH_STATE))

    def load(self, directory: str) -> dict:
        state = torch.load(os.path.join(directory, TORCH_STATE), map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro = int(state["micro"])
        return state.get("client", {})


class DeepSpeedModuleEngine:
    """The same interface over `deepspeed.initialize` (ZeRO stage `zero_stage`, bf16 on GPU only).

    DeepSpeed does the accumulation itself (gradient_accumulation_steps; `step` is a no-op between
    boundaries) and scales the loss by 1/grad_accum in `backward`. torch.distributed must already be
    initialised (Ray Train does it; a single process can init gloo with world size 1).
    """

    def __init__(self, module: nn.Module, lr: float, world_size: int, micro_batch: int, grad_accum: int = 1,
                 grad_clip: float = 1.0, warmup: int = 0, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, zero_stage: int = 2, bf16: bool = True,
                 device: str | torch.device | None = None, schedule: Callable[[int], float] | None = None,
                 compile: bool = False):
        import deepspeed
        on_gpu = torch.cuda.is_available()
        if on_gpu and device is not None:
            torch.cuda.set_device(device)
        if compile:
            module.compile()                     # before DeepSpeed wraps it (its hooks stay outside the graph)
        optimizer = torch.optim.AdamW(module.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      fused=on_gpu)
        config = deepspeed_config(micro_batch, grad_accum, world_size, zero_stage, bf16, grad_clip, on_gpu)
        self.engine, *_ = deepspeed.initialize(
            model=module, optimizer=optimizer, config=config, dist_init_required=False,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, _schedule(schedule, warmup)))
        self.device = self.engine.device
        self.grad_accum = int(grad_accum)

    def __call__(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save(self, directory: str, client: dict | None = None) -> None:
        """DeepSpeed's own checkpoint under tag 'state': the module (rank 0), every rank's ZeRO optimiser
        partition (fp32 master weights and Adam moments), the LR schedule and its step counters, and the
        stage's `client` dict. Every rank must call it (a collective)."""
        self.engine.save_checkpoint(directory, tag=DEEPSPEED_TAG, client_state=dict(client or {}))

    def load(self, directory: str) -> dict:
        """Restore everything `save` wrote into this engine (every rank); the stage's dict."""
        path, client = self.engine.load_checkpoint(directory, tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                                   load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"{directory}: no DeepSpeed checkpoint tagged {DEEPSPEED_TAG!r}")
        return dict(client or {})

    @property
    def module(self) -> nn.Module:
        return self.engine.module
