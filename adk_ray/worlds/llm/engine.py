"""Optimiser engines for the LLM world's fine-tuning stages (aligners, PAD): a module, its AdamW and
gradient accumulation behind one small interface, so a stage's loop is the same in one process and in a
Ray Train worker wrapping DeepSpeed.

    out = engine(*args)      forward through the trained module (DeepSpeed: through its engine)
    engine.backward(loss)    backward of one micro-batch's loss (scaled by 1/grad_accum)
    engine.step()            after every micro-batch: the optimiser steps only at an accumulation boundary
    engine.module            the trained nn.Module (sample and score with it under torch.no_grad)
    engine.save(directory)   module, optimiser, LR schedule and accumulation count, for resuming (every rank)
    engine.load(directory)   restore what `save` wrote, in place (same module, same optimiser objects)

The student-training engines of `train.py` wrap a causal-LM loss; these wrap any module whose forward
the stage defines (a policy with a value head, say) and leave the loss to the stage. Both build their
DeepSpeed engines from `deepspeed_config`.
"""
from __future__ import annotations

import os

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


class TorchEngine:
    """Single-process AdamW with gradient accumulation, gradient clipping and a linear warmup."""

    def __init__(self, module: nn.Module, lr: float, grad_accum: int = 1, grad_clip: float = 1.0,
                 warmup: int = 0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.module = module.to(self.device).train()
        self.grad_accum, self.clip = int(grad_accum), float(grad_clip)
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=lr, betas=betas, eps=eps,
                                           weight_decay=weight_decay, fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda u: warmup_multiplier(u, warmup))
        self.micro = 0

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

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

    def save(self, directory: str) -> None:
        """One file, engine.pt: module, AdamW moments and step counts, the LR schedule, the micro count."""
        os.makedirs(directory, exist_ok=True)
        torch.save({"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "micro": self.micro},
                   os.path.join(directory, TORCH_STATE))

    def load(self, directory: str) -> None:
        state = torch.load(os.path.join(directory, TORCH_STATE), map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro = int(state["micro"])


class DeepSpeedModuleEngine:
    """The same interface over `deepspeed.initialize` (ZeRO stage `zero_stage`, bf16 on GPU only).

    DeepSpeed does the accumulation itself (gradient_accumulation_steps; `step` is a no-op between
    boundaries) and scales the loss by 1/grad_accum in `backward`. torch.distributed must already be
    initialised (Ray Train does it; a single process can init gloo with world size 1).
    """

    def __init__(self, module: nn.Module, lr: float, world_size: int, micro_batch: int, grad_accum: int = 1,
                 grad_clip: float = 1.0, warmup: int = 0, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, zero_stage: int = 2, bf16: bool = True,
                 device: str | torch.device | None = None):
        import deepspeed
        on_gpu = torch.cuda.is_available()
        if on_gpu and device is not None:
            torch.cuda.set_device(device)
        optimizer = torch.optim.AdamW(module.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      fused=on_gpu)
        config = deepspeed_config(micro_batch, grad_accum, world_size, zero_stage, bf16, grad_clip, on_gpu)
        self.engine, *_ = deepspeed.initialize(
            model=module, optimizer=optimizer, config=config, dist_init_required=False,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda u: warmup_multiplier(u, warmup)))
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

    def save(self, directory: str) -> None:
        """DeepSpeed's own checkpoint under tag 'state': the module (rank 0), every rank's ZeRO optimiser
        partition (fp32 master weights and Adam moments), the LR schedule and its step counters. Every
        rank must call it (a collective)."""
        self.engine.save_checkpoint(directory, tag=DEEPSPEED_TAG)

    def load(self, directory: str) -> None:
        """Restore everything `save` wrote into this engine (every rank)."""
        path, _ = self.engine.load_checkpoint(directory, tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"{directory}: no DeepSpeed checkpoint tagged {DEEPSPEED_TAG!r}")

    @property
    def module(self) -> nn.Module:
        return self.engine.module
