#!/usr/bin/env bash
# The LLM world's GPU path in one go, on one GPU, in at most ~8 minutes (an H100/H200):
#
#   1. sampling throughput (benchmarks/llm_sampling.py): SmolLM2-135M shape, bf16, our static-cache
#      decoder eager and compiled (CUDA graphs), end to end, and HF generate as the anchor;
#      target >= 100k new tokens/s for the 135M shape;
#   2. student training MFU (benchmarks/llm_train_mfu.py): SmolLM2-360M shape, seq 512, the world's
#      engines (plain + compile, DeepSpeed ZeRO-2 + compile, inside a Ray Train worker); target >= 45 %;
#   3. `llm_ppo` on the `gguf` preset (real SmolLM2-135M-Instruct p*) at reduced size: 1 seed, 20 PPO
#      iterations, 20k training sequences, 1024 per metric; rows for every model of both pipelines.
#
# Every result is printed as one line starting with "ROW |" the moment it finishes, so a run cut short
# still reports what it measured. Everything lands under OUT_DIR:
#   OUT_DIR/sampling.log, train_mfu.log, llm_ppo.log   full output of each step
#   OUT_DIR/rows.md                                     every ROW line, as a markdown table body
#   OUT_DIR/results/llm_ppo/                            the sweep's results (data/, samples/, dashboard.html)
#   OUT_DIR/env.txt                                     GPU, driver, torch, transformers, deepspeed versions
#
#   benchmarks/gpu_check.sh OUT_DIR                  on the GPU machine (repository root as cwd)
#   benchmarks/gpu_check.sh OUT_DIR --cpu-dry-run    the same steps at CPU-smoke sizes (benchmarks'
#                                                    --cpu-smoke, the sweep's --dry-run): checks the
#                                                    script and its arguments in about a minute
#
# Each step runs under `timeout` (seconds below, ~460 in all) and a failed or timed-out step is reported
# as a row and does not stop the next one; the exit status is the number of failed steps.
set -uo pipefail

OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--cpu-dry-run]}
MODE=${2:-}
if [[ -n "$MODE" && "$MODE" != "--cpu-dry-run" ]]; then
  echo "gpu_check.sh: unknown option '$MODE' (the only option is --cpu-dry-run)" >&2
  exit 2
fi
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
: > "$OUT/rows.md"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RAY_USAGE_STATS_ENABLED=0
FAILED=0

emit() {  # one result row, on stdout and in rows.md
  echo "ROW | $* |" | tee -a "$OUT/rows.md"
}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep ROW lines, report failures
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name (at most ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | grep --line-buffered '^ROW |' \
      | tee -a "$OUT/rows.md"
  local rc=${PIPESTATUS[0]}
  if (( rc != 0 )); then
    FAILED=$((FAILED + 1))
    emit "$name" "FAILED rc=$rc (124: over ${limit}s)" "$((SECONDS - t0)) s" "see $name.log"
  else
    emit "$name" "ok" "$((SECONDS - t0)) s"
  fi
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python - <<'EOF'
import torch, transformers, deepspeed, ray
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available()
      and torch.cuda.get_device_name(0))
print("transformers", transformers.__version__, "deepspeed", deepspeed.__version__, "ray", ray.__version__)
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [[ "$MODE" == "--cpu-dry-run" ]]; then
  step sampling 120 python benchmarks/llm_sampling.py --cpu-smoke --variants ours-compile,ours-e2e,ours,hf
  step train_mfu 180 python benchmarks/llm_train_mfu.py --cpu-smoke --variants plain,ds
  step llm_ppo 120 python -m adk_ray.sweep llm_ppo --dry-run --set seeds=1 --set iterations=20 \
      --set checkpoint_every=10 --set train_samples=20000 --set eval_samples=1024 --storage "$OUT/results"
  echo "gpu_check.sh: CPU dry run, $FAILED failed step(s); rows in $OUT/rows.md"
  exit "$FAILED"
fi

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: no CUDA device visible to torch (use --cpu-dry-run to check the script on CPU)" >&2
  exit 2
fi

# 1. Sampling: batch 512 x 256 new tokens; the compiled decoder and its end-to-end path, HF generate last
#    (the slowest; it is the anchor, not the target).
step sampling 120 python benchmarks/llm_sampling.py --shape 135M --batch 512 --new 256 \
    --variants ours-compile,ours-e2e,ours,hf
# 2. Training MFU at the 360M shape, seq 512: compiled plain engine, compiled DeepSpeed ZeRO-2, and the
#    same inside a Ray Train worker (what the pipeline runs).
step train_mfu 150 python benchmarks/llm_train_mfu.py --shape 360M --batch 32 --seq 512 --steps 10 \
    --variants plain-compile,ds-compile,ray
# 3. llm_ppo on the real-weights gguf preset, reduced; then one row per model of both pipelines.
step llm_ppo 190 python -m adk_ray.sweep llm_ppo --set seeds=1 --set iterations=20 --set checkpoint_every=10 \
    --set train_samples=20000 --set eval_samples=1024 --storage "$OUT/results"
python - "$OUT/results/llm_ppo" <<'EOF' | tee -a "$OUT/rows.md"
import sys
import pandas as pd
try:
    d = pd.read_parquet(f"{sys.argv[1]}/data")
except Exception as e:  # noqa: BLE001 - a missing result is itself the row
    print(f"ROW | llm_ppo rows | none: {type(e).__name__}: {e} |")
    sys.exit(0)
d = d[d.stage != "selection_curve"]
for r in d.itertuples():
    print(f"ROW | llm_ppo gguf | {r.pipeline} {r.stage} | reward {r.final_average_reward:.4f} | target precision "
          f"{r.target_precision:.3f} | precision {r.overall_precision:.3f} | recall {r.overall_recall:.3f} | "
          f"{r.status} |")
EOF

echo "gpu_check.sh: $FAILED failed step(s); rows in $OUT/rows.md, logs and results under $OUT"
exit "$FAILED"
