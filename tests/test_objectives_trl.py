"""Library tier (docs/llm.md: why our own loops): our objectives against TRL's own code on the same inputs.

The aligners of both worlds are written on `adk_ray.objectives` rather than on TRL's trainers (the MoG world
is seed-batched; TRL's trainers are not). So each test here runs a real TRL 1.16 code path and our
objectives on identical inputs and asserts they agree, values and (where there is a loss) gradients.

How TRL is called. DPO, GRPO and RLOO compute their losses in trainer methods (`DPOTrainer._compute_loss`,
`GRPOTrainer._generate_and_score_completions` / `_compute_loss`, `RLOOTrainer` likewise) that read a dozen
trainer attributes and the model patched with TRL's fused LM head. Re-typing those formulas would test
nothing, and a stand-in object with "only the attributes it reads" would drift as TRL changes. So each test
constructs the real trainer, from a local directory holding a tiny randomly initialised Llama (1 layer,
width 16) and a tokenizer built here (tokenizers WordLevel + PreTrainedTokenizerFast): no hub access. The
reference model is the one TRL itself loads from that directory; the policy's weights are then perturbed
(a stand-in for optimisation steps) so that log-ratios, KL and PPO clipping are all non-trivial. TRL's
methods are then called directly: GRPO/RLOO generate their own completions and call our reward function;
our side recomputes every log-prob independently with the gather pattern the LLM world uses
(`torch.log_softmax(logits, -1).gather(...)`), never reusing TRL's. The one trainer attribute set by hand
is `current_gradient_accumulation_steps = 1`, which `Trainer`'s training loop sets before any loss is
computed (GRPO divides its loss by it).

What is compared:
* `selective_log_softmax` (trl.trainer.utils) vs our log_softmax→gather pattern.
* DPOTrainer, loss_type="sigmoid": the per-pair loss, rewards/chosen, rewards/rejected, rewards/margins
  and the policy gradient vs `dpo_loss` / `dpo_logits`.
* GRPOTrainer advantages (scale_rewards "group" / "none") vs `grpo_advantage` (std_normalize True / False;
  TRL's ε is a fixed 1e-4, ours defaults to 1e-6, so the test passes eps=1e-4).
* GRPOTrainer per-token loss (loss_type "grpo" and "dapo", token-level importance sampling, two-sided ε
  clip, β·k3 KL) vs `grpo_token_loss` (= `ppo_clipped_loss(…) + β·kl_k3(…)`) aggregated the same way with
  `masked_mean` ("dapo" = one masked mean over the batch's tokens, as the LLM world's GRPO does). TRL 1.16
  multiplies the KL term by the importance ratio by default (`use_bias_correction_kl=True`, DeepSeek-V3.2);
  ours does not (the GRPO paper's form), so the main test sets it False and a second test pins down the
  difference. TRL's default loss_type is "dapo" and its default scale_rewards "group".
* RLOOTrainer: its sequence-level KL-shaped reward R − β(log π_old(y) − log π_ref(y)) and its sequence-level
  PPO clipped surrogate vs `kl_shaped_reward` and `ppo_clipped_loss` (the forms the MoG PPO uses per sample),
  and vs `ppo_token_rewards` summed over tokens (the LLM world's per-token form). RLOO's leave-one-out
  advantage is G/(G−1) times the group-centred one, so it is compared with G/(G−1)·`grpo_advantage`.
* PPO proper: TRL 1.16 removed PPOTrainer and ships no GAE, value head, value clipping or whitening
  (`masked_whiten`), neither in `trl` nor in `trl.experimental`; `gae`, `value_loss`, `clipped_value_loss`
  and `masked_whiten` (TRL 0.9.6's PPOTrainer math) have nothing in TRL 1.16 to be checked against, so that
  test skips (and fails, asking for the comparison, if TRL ships one again).
* `kd.py` (KD temperature reweighting, reward folding) has no TRL counterpart.
"""
from __future__ import annotations

import pytest
import torch

from adk_ray.objectives.dpo import dpo_logits, dpo_loss
from adk_ray.objectives.rl import (grpo_advantage, grpo_token_loss, kl_k3, kl_shaped_reward, masked_mean,
                                   ppo_clipped_loss, ppo_token_rewards)

trl = pytest.importorskip("trl")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer  # noqa: E402
from trl.trainer.utils import selective_log_softmax  # noqa: E402

WORDS = ["<pad>", "<eos>", "<bos>"] + list("abcdefghijkl")
PROMPTS = ["a b", "c d e", "f"]
G = 4                       # completions per prompt
MAX_NEW = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny random Llama and a word-level tokenizer, saved where TRL can load them (policy and reference)."""
    d = tmp_path_factory.mktemp("tiny_llama")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                            bos_token="<bos>").save_pretrained(d)
    cfg = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return str(d)


def _common(tmp_path) -> dict:
    return dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", bf16=False, save_strategy="no",
                logging_steps=1)


@torch.no_grad()
def _perturb(model, scale: float, seed: int) -> None:
    """Move the policy away from the reference TRL loaded (a stand-in for optimisation steps)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g))


def _completion_logps(model, out: dict) -> torch.Tensor:
    """Per-token log π(y_t | x, y_<t) of the completions, [B, T], by our gather pattern (not TRL's)."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attn = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    T = out["completion_ids"].shape[1]
    logits = model(input_ids=ids, attention_mask=attn).logits[:, -T - 1:-1]
    return torch.log_softmax(logits, -1).gather(-1, out["completion_ids"][..., None])[..., 0]


def _grads(model, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params))


def _last(trainer, key: str) -> float:
    return trainer._metrics["train"][key][-1]


class _Rewards:
    """A reward function for TRL: fixed random rewards (one group constant, for the zero-std case), recorded."""

    __name__ = "fixed_random"

    def __init__(self, seed: int = 1):
        self.seed, self.seen = seed, []

    def __call__(self, prompts, completions, **kwargs):
        r = torch.randn(len(completions), generator=torch.Generator().manual_seed(self.seed))
        r[2 * G:3 * G] = 0.7
        self.seen.append(r)
        return r.tolist()


# --------------------------------------------------------------------------- per-token log-probs
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_selective_log_softmax_matches_our_gather(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 5, 37, generator=g)).to(dtype)
    index = torch.randint(0, 37, (3, 5), generator=g)
    ours = torch.log_softmax(logits, -1).gather(-1, index[..., None])[..., 0]
    torch.testing.assert_close(selective_log_softmax(logits, index), ours)
    # a wrong token would not match
    assert not torch.allclose(selective_log_softmax(logits, (index + 1) % 37), ours)


# --------------------------------------------------------------------------- DPO
def test_dpo_sigmoid_loss_and_margins_match_trl_dpo_trainer(model_dir, tmp_path):
    beta = 0.3
    ds = Dataset.from_dict({"prompt": ["a b", "c d e", "f"], "chosen": [" f g", " h", " a b c"],
                            "rejected": [" i", " j k l", " d"]})
    args = DPOConfig(**_common(tmp_path), per_device_train_batch_size=3, beta=beta, loss_type=["sigmoid"])
    tr = DPOTrainer(model=model_dir, args=args, train_dataset=ds)
    assert tr.ref_model is not None and tr.precompute_ref_logps is False
    _perturb(tr.model, 0.5, seed=3)
    tr.model.train()
    batch = next(iter(tr.get_train_dataloader()))        # rows: [chosen_0..2, rejected_0..2]
    B = batch["input_ids"].shape[0] // 2

    def seq_logps(model):
        ids = batch["input_ids"]
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1]
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        return (lp * batch["completion_mask"][:, 1:]).sum(-1).chunk(2)

    logp_w, logp_l = seq_logps(tr.model)
    with torch.no_grad():
        ref_w, ref_l = seq_logps(tr.ref_model)
    ours = dpo_loss(logp_w, logp_l, ref_w, ref_l, beta)
    margins = dpo_logits(logp_w, logp_l, ref_w, ref_l, beta)
    assert margins.detach().abs().min() > 0.05          # policy ≠ reference: β matters

    # per pair: TRL on the 2-row batch [chosen_i, rejected_i]
    for i in range(B):
        pair = {k: v[[i, B + i]] for k, v in batch.items()}
        trl_loss = tr.compute_loss(tr.model, pair)
        torch.testing.assert_close(trl_loss.detach(), ours[i].detach())
        torch.testing.assert_close(torch.tensor(_last(tr, "rewards/margins")), margins[i].detach())
        torch.testing.assert_close(torch.tensor(_last(tr, "rewards/chosen")), beta * (logp_w - ref_w)[i].detach())
        torch.testing.assert_close(torch.tensor(_last(tr, "rewards/rejected")), beta * (logp_l - ref_l)[i].detach())

    # whole batch: loss and its gradient with respect to every policy weight
    trl_loss = tr.compute_loss(tr.model, batch)
    torch.testing.assert_close(trl_loss.detach(), ours.mean().detach())
    for a, b in zip(_grads(tr.model, trl_loss), _grads(tr.model, ours.mean())):
        torch.testing.assert_close(a, b)
    # the comparison can fail: a 10% wrong β does
    wrong = dpo_loss(logp_w, logp_l, ref_w, ref_l, 1.1 * beta).mean()
    assert not torch.allclose(trl_loss.detach(), wrong.detach(), rtol=1e-3, atol=0)


# --------------------------------------------------------------------------- GRPO
def _grpo(model_dir, tmp_path, rewards: _Rewards, **config):
    cfg = dict(per_device_train_batch_size=len(PROMPTS) * G, num_generations=G, max_completion_length=MAX_NEW,
               beta=0.04, epsilon=0.2, loss_type="grpo", scale_rewards="group", use_bias_correction_kl=False,
               num_iterations=2)                         # num_iterations > 1: TRL keeps π_old's log-probs
    cfg.update(config)
    tr = GRPOTrainer(model=model_dir, reward_funcs=rewards, args=GRPOConfig(**_common(tmp_path), **cfg),
                     train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    tr.current_gradient_accumulation_steps = 1          # what Trainer's loop sets (gradient_accumulation_steps=1)
    tr.model.train()
    _perturb(tr.model, 0.3, seed=5)                     # π_old ≠ π_ref
    out = tr._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(G)])
    return tr, out


@pytest.mark.parametrize("scale_rewards, std_normalize", [("group", True), ("none", False)])
def test_grpo_advantage_matches_trl(model_dir, tmp_path, scale_rewards, std_normalize):
    rewards = _Rewards()
    tr, out = _grpo(model_dir, tmp_path, rewards, scale_rewards=scale_rewards, beta=0.0)
    (r,) = rewards.seen
    ours = grpo_advantage(r.view(-1, G), std_normalize=std_normalize, eps=1e-4).view(-1)
    torch.testing.assert_close(out["advantages"], ours)
    if std_normalize:   # our default ε (1e-6) is not TRL's (1e-4): visible at float32 precision
        assert not torch.allclose(out["advantages"], grpo_advantage(r.view(-1, G), True).view(-1), rtol=1e-6, atol=0)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_grpo_clipped_k3_loss_matches_trl(model_dir, tmp_path, loss_type):
    beta, eps = 0.04, 0.2
    tr, out = _grpo(model_dir, tmp_path, _Rewards(), loss_type=loss_type, beta=beta, epsilon=eps)
    _perturb(tr.model, 0.3, seed=6)                     # π_θ ≠ π_old: the clip is exercised
    trl_loss = tr._compute_loss(tr.model, out)

    mask = out["completion_mask"].float()
    logp = _completion_logps(tr.model, out)
    old, ref, adv = out["old_per_token_logps"], out["ref_per_token_logps"], out["advantages"][:, None]
    per_token = grpo_token_loss(logp, old, ref, adv, beta, eps)
    torch.testing.assert_close(per_token, ppo_clipped_loss(logp, old, adv, eps) + beta * kl_k3(logp, ref))
    if loss_type == "grpo":          # mean over each completion's tokens, then over completions
        ours = masked_mean(per_token, mask, dim=-1).mean()
    else:                            # "dapo": over all the batch's tokens (the LLM world's align.py: masked_mean)
        ours = masked_mean(per_token, mask)
    torch.testing.assert_close(trl_loss.detach(), ours.detach())
    for a, b in zip(_grads(tr.model, trl_loss), _grads(tr.model, ours)):
        torch.testing.assert_close(a, b)

    # the inputs exercise every term: some tokens clipped (not all), KL > 0; a wrong β or ε would not match
    assert 0 < _last(tr, "clip_ratio/region_mean") < 1 and _last(tr, "kl") > 0.01
    for b_, e_ in [(1.25 * beta, eps), (beta, 0.25)]:
        wrong = grpo_token_loss(logp, old, ref, adv, b_, e_)
        wrong = masked_mean(wrong, mask, dim=-1).mean() if loss_type == "grpo" else masked_mean(wrong, mask)
        assert not torch.allclose(trl_loss.detach(), wrong.detach(), rtol=1e-4, atol=0)


def test_grpo_default_bias_corrected_kl_differs_from_ours(model_dir, tmp_path):
    """TRL 1.16's default `use_bias_correction_kl=True` is our k3 weighted by the importance ratio π_θ/π_old."""
    beta, eps = 0.04, 0.2
    tr, out = _grpo(model_dir, tmp_path, _Rewards(), beta=beta, epsilon=eps, use_bias_correction_kl=True)
    assert tr.args.use_bias_correction_kl
    _perturb(tr.model, 0.3, seed=6)
    trl_loss = tr._compute_loss(tr.model, out)
    mask = out["completion_mask"].float()
    logp = _completion_logps(tr.model, out)
    old, ref, adv = out["old_per_token_logps"], out["ref_per_token_logps"], out["advantages"][:, None]
    ratio = torch.exp(logp - old)
    corrected = ppo_clipped_loss(logp, old, adv, eps) + beta * ratio * kl_k3(logp, ref)
    plain = ppo_clipped_loss(logp, old, adv, eps) + beta * kl_k3(logp, ref)
    seq_mean = lambda x: ((x * mask).sum(-1) / mask.sum(-1)).mean()  # noqa: E731
    torch.testing.assert_close(trl_loss.detach(), seq_mean(corrected).detach())
    assert not torch.allclose(trl_loss.detach(), seq_mean(plain).detach(), rtol=1e-3, atol=0)


# --------------------------------------------------------------------------- PPO-side math TRL still ships (RLOO)
def test_rloo_kl_shaped_reward_and_clipped_surrogate_match_trl(model_dir, tmp_path):
    beta, eps = 0.05, 0.2
    rewards = _Rewards(seed=2)
    args = RLOOConfig(**_common(tmp_path), per_device_train_batch_size=len(PROMPTS) * G, num_generations=G,
                      max_completion_length=MAX_NEW, beta=beta, epsilon=eps, normalize_advantages=False)
    tr = RLOOTrainer(model=model_dir, reward_funcs=rewards, args=args,
                     train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    tr.model.train()
    _perturb(tr.model, 0.3, seed=7)                     # π_old ≠ π_ref: the KL penalty is non-zero
    out = tr._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(G)])
    (r,) = rewards.seen
    mask = out["completion_mask"].float()
    with torch.no_grad():
        logp_old = (_completion_logps(tr.model, out) * mask).sum(-1)
        logp_ref = (_completion_logps(tr.ref_model, out) * mask).sum(-1)
    shaped = kl_shaped_reward(r, logp_old, logp_ref, beta)
    assert (logp_old - logp_ref).abs().max() > 0.5
    torch.testing.assert_close(out["old_logps"], logp_old)
    # leave-one-out baseline: R_i − mean_{j≠i} R_j = G/(G−1) · (R_i − mean_j R_j)
    ours_adv = G / (G - 1) * grpo_advantage(shaped.view(-1, G)).view(-1)
    torch.testing.assert_close(out["advantages"], ours_adv)
    # the per-token form the LLM world's PPO pays (KL at every token, R at the last) sums to the same reward
    with torch.no_grad():
        token_r = ppo_token_rewards(r, _completion_logps(tr.model, out), _completion_logps(tr.ref_model, out), mask,
                                    beta)
    torch.testing.assert_close(out["advantages"], G / (G - 1) * grpo_advantage(token_r.sum(-1).view(-1, G)).view(-1))
    wrong = G / (G - 1) * grpo_advantage(kl_shaped_reward(r, logp_old, logp_ref, 1.2 * beta).view(-1, G)).view(-1)
    assert not torch.allclose(out["advantages"], wrong, rtol=1e-3, atol=0)

    _perturb(tr.model, 0.05, seed=8)                    # π_θ ≠ π_old: the clip is exercised
    trl_loss = tr._compute_loss(tr.model, out)
    logp_new = (_completion_logps(tr.model, out) * mask).sum(-1)
    ours = ppo_clipped_loss(logp_new, out["old_logps"], out["advantages"], eps).mean()
    torch.testing.assert_close(trl_loss.detach(), ours.detach())
    for a, b in zip(_grads(tr.model, trl_loss), _grads(tr.model, ours)):
        torch.testing.assert_close(a, b)
    assert 0 < _last(tr, "clip_ratio/region_mean") < 1
    wrong = ppo_clipped_loss(logp_new, out["old_logps"], out["advantages"], 0.3).mean()
    assert not torch.allclose(trl_loss.detach(), wrong.detach(), rtol=1e-4, atol=0)


def test_ppo_gae_value_loss_whitening_vs_trl():
    """`gae`, `value_loss`, `clipped_value_loss`, `masked_whiten` against TRL's PPO, if TRL ships one."""
    import importlib

    found = []
    for mod, name in [("trl", "PPOTrainer"), ("trl.experimental.ppo", "PPOTrainer"),
                      ("trl.trainer.utils", "masked_whiten"), ("trl.core", "masked_whiten"),
                      ("trl.experimental.utils", "masked_whiten"),
                      ("trl", "AutoModelForCausalLMWithValueHead")]:
        try:
            if hasattr(importlib.import_module(mod), name):
                found.append(f"{mod}.{name}")
        except Exception:      # noqa: BLE001 - a missing module or one whose import fails alike means "not shipped"
            pass
    if not found:
        pytest.skip(f"TRL {trl.__version__} ships no PPO: PPOTrainer was removed, and neither trl nor trl.experimental "
                    "has GAE, a value head, value clipping or masked_whiten to compare gae, value_loss, "
                    "clipped_value_loss or masked_whiten against")
    pytest.fail(f"TRL {trl.__version__} ships {found}: compare adk_ray.objectives.rl.gae / value_loss / "
                "clipped_value_loss / masked_whiten against it (our own code is checked against the library where it exists)")
