#!/usr/bin/env bash
# The GPU benchmark suite: one script, under 8 minutes on one H100 or H200, markdown on stdout.
#
#   bash bench/gpu_suite.sh            # on the GPU machine, from the repository root
#   bash bench/gpu_suite.sh --tiny     # the same code paths on CPU at tiny shapes (a smoke test, ~2 min)
#
# 1. Rollouts at LLaDA-8B's shape (random bf16 weights, 4 prompts of 32 tokens, 256 and 512 tokens, block 32,
#    steps = length / 2, greedy): the plain loop and every cache mode with and without threshold 0.9,
#    then cache none and dual compiled (bench/rollout.py speed).
# 2. One ESPO step at LLaDA-8B's shape with LoRA (bench/llada8b.py): peak memory, TFLOP/s per phase.
# 3. The LM-head benchmark (bench/lm_head.py; a CPU benchmark by design, run on the host's cores).
# 4. The update roofline (bench/update_roofline.py): every objective's likelihood passes at a 1B-class LLaDA
#    body (d_model 2048, 8 layers, vocabulary 126,464, bf16), 12 rows, 64 and 256 tokens, against the
#    same GPU's bf16 matmul rate; then ESPO's current pass again with selective activation checkpointing.
# 5. Per-phase peak memory of one ESPO step at that shape (bench/step_memory.py): rollout, old/reference
#    passes, current forward, backward, optimiser step; without and with selective activation checkpointing.
# Each part has its own time limit, so one slow part cannot eat the others' time; a part that hits it
# prints a line saying so and the suite goes on.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}

if [ "${1:-}" = "--tiny" ] || [ "${GPU_SUITE_TINY:-0}" = "1" ]; then
  ROLLOUT=(--device cpu --dtype float32 --shape tiny --lengths 64 --batch 2)
  LLADA8B=(--shape tiny --device cpu --gen 32 --steps 8 --prompt_len 16 --lora_r 8)
  LM_HEAD=""  # fixed 126k-vocabulary shape needing ~6 GB: skipped in the smoke test
  ROOFLINE=(--device cpu --dtype float32 --shape tiny --lengths 16 --repeats 1)
  MEMORY=(--device cpu --dtype float32 --shape tiny --lengths 32)
  LIMITS=(300 300 0 120 120)
else
  ROLLOUT=(--device cuda --dtype bfloat16 --shape 8b --lengths 256 512 --batch 4)
  LLADA8B=(--device cuda)
  LM_HEAD="--repeats 3"
  ROOFLINE=(--device cuda --dtype bfloat16 --shape 1b --lengths 64 256 --repeats 5)
  MEMORY=(--device cuda --dtype bfloat16 --shape 1b --lengths 256)
  LIMITS=(210 100 45 75 40)  # 470 s at most in all
fi

part() {  # part LIMIT TITLE COMMAND...
  local limit=$1 title=$2
  shift 2
  echo
  echo "### $title"
  echo
  timeout "$limit" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "(stopped at its ${limit} s limit)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "(failed with exit status $rc)"
  return 0
}

device="no GPU (CPU)"
command -v nvidia-smi > /dev/null && device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "## GPU suite, $(date -u '+%Y-%m-%d %H:%M UTC'), $device, torch $($PY -c 'import torch; print(torch.__version__)')"

half=$((LIMITS[0] * 2 / 3))
part "$half" "Rollouts: cache x threshold (bench/rollout.py)" \
  "$PY" bench/rollout.py speed --family llada --steps-ratio 0.5 --thresholds 0.9 "${ROLLOUT[@]}"
part "$((LIMITS[0] - half))" "Rollouts compiled (bench/rollout.py --compile-only)" \
  "$PY" bench/rollout.py speed --family llada --steps-ratio 0.5 --thresholds --caches none dual \
  --compile-only --skip-reference "${ROLLOUT[@]}"
part "${LIMITS[1]}" "ESPO step with LoRA at LLaDA-8B shape (bench/llada8b.py)" \
  bash -c "\"$PY\" bench/llada8b.py ${LLADA8B[*]} | \"$PY\" -c '
import json, sys
text = sys.stdin.read()
result = json.loads(text[text.index(\"{\"):])
print(\"| quantity | value |\")
print(\"|---|---|\")
for key, value in result.items():
    print(f\"| {key} | {value} |\")'"
if [ -n "$LM_HEAD" ]; then
  part "${LIMITS[2]}" "LM head restricted vs full logits (bench/lm_head.py, CPU)" "$PY" bench/lm_head.py $LM_HEAD
else
  echo
  echo "### LM head (bench/lm_head.py): skipped in --tiny (its shape is fixed at the 126k vocabulary)"
fi
roof=$((LIMITS[3] * 3 / 4))
part "$roof" "Update roofline: each objective's likelihood passes vs the matmul rate (bench/update_roofline.py)" \
  "$PY" bench/update_roofline.py "${ROOFLINE[@]}"
part "$((LIMITS[3] - roof))" "Update roofline, ESPO with selective activation checkpointing" \
  "$PY" bench/update_roofline.py "${ROOFLINE[@]}" --objectives espo --lengths 256 --checkpointing selective
part "${LIMITS[4]}" "Per-phase peak memory of one ESPO step (bench/step_memory.py)" \
  "$PY" bench/step_memory.py "${MEMORY[@]}" --checkpointing none selective
