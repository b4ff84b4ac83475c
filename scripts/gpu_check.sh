#!/usr/bin/env bash
# The CUDA path end to end, on a machine with a GPU, in one command (under 8 minutes on one GPU):
#   1. the test suite's CUDA-relevant parts with the GPU visible (Triton kernels compiled for the
#      GPU instead of interpreted, spiking kernels, samplers, generation);
#   2. benchmarks/neurons.py --device cuda (Triton vs spikingjelly (CuPy / torch) vs snnTorch vs
#      ReLU, forward+backward, T = 4/8/16), benchmarks/model_steps.py --device cuda and
#      benchmarks/memory.py --device cuda (SDDPM CIFAR-10 peak memory at T = 2/4/8 with and without
#      activation checkpointing);
#   3. every model family's small config end to end on the GPU: train a few steps, sample,
#      evaluate with n=64.
# Prints one table and exits non-zero if anything failed.
#
# Needs, besides what the GPU machine has (torch+CUDA, Triton, CuPy, Lightning, torchmetrics):
# mlxtend, snntorch, spikingjelly as wheels in .whl/ (made here by scripts/gpu_wheels.sh).
# With the device tool: carry [".whl"] and run `bash scripts/gpu_check.sh`.
#
# GPU_CHECK_DEVICE=cpu runs the same steps on the CPU as a rehearsal (2 training steps, the
# benchmarks' quick settings, the Triton tests in the interpreter): it checks the script's own
# commands and options where no GPU is lent (tests/test_gpu_check.py, slow marker).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-/tmp/gpu_check}"; mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
device="${GPU_CHECK_DEVICE:-cuda}"
if [ "$device" = cuda ]; then
  python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible')" \
    || exit 2
  accelerator=gpu; train_steps=20
  neuron_args=(--device cuda); step_args=(--device cuda --repeat 3)
  memory_args=(--device cuda --batch 4 --repeat 5)
else  # the CPU rehearsal
  export TRITON_INTERPRET=1
  accelerator=cpu; train_steps=2
  neuron_args=(--quick --no-cpp); step_args=(--device cpu --repeat 1 --batch 2)
  memory_args=(--device cpu --ch 8 --timesteps 2 --batch 1)
fi
declare -a names=() results=() seconds=()
step() {  # step NAME COMMAND...: run, time, record
  local name="$1"; shift
  local t0=$SECONDS
  echo "=== $name: $*"
  if "$@" > "$out/$name.log" 2>&1; then results+=("ok"); else results+=("FAILED"); fi
  names+=("$name"); seconds+=($((SECONDS - t0)))
  tail -n 25 "$out/$name.log"
}
step cuda-tests python3 -m pytest -q -x -p no:cacheprovider tests/spiking tests/test_generation.py \
    tests/diffusion/test_diffusion_samplers.py
step neurons python3 benchmarks/neurons.py "${neuron_args[@]}" --out "$out/neurons.json"
step model-steps python3 benchmarks/model_steps.py "${step_args[@]}" \
    --json "$out/model_steps.json"
step memory python3 benchmarks/memory.py "${memory_args[@]}" --out "$out/memory.json"
runs="$(mktemp -d)"
for cfg in sae_mnist5k fsvae_mnist5k ann_vae_mnist5k ddpm_mnist5k_small sddpm_mnist5k_small \
           vqvae_temporal_mnist5k_small; do
  step "train-$cfg" python3 -m snngen train "configs/$cfg.yaml" trainer.max_steps=$train_steps \
      trainer.accelerator=$accelerator trainer.devices=1 eval.n_samples=64 "out_dir=$runs" "name=$cfg"
  if [ "$cfg" != vqvae_temporal_mnist5k_small ]; then
    step "sample-$cfg" python3 -m snngen sample "$runs/$cfg" --n 16 --device $device \
        --out "$out/$cfg.png"
    step "eval-$cfg" python3 -m snngen eval "$runs/$cfg" --n 64 --device $device
  fi
done
step train-sdm_tsm python3 -m snngen train configs/sdm_tsm_mnist5k_small.yaml \
    trainer.max_steps=$train_steps trainer.accelerator=$accelerator trainer.devices=1 eval.n_samples=64 \
    "model.init_from=$runs/sddpm_mnist5k_small" "out_dir=$runs" name=sdm_tsm
step train-vq_prior python3 -m snngen train configs/vq_prior_temporal_mnist5k_small.yaml \
    trainer.max_steps=$train_steps trainer.accelerator=$accelerator trainer.devices=1 eval.n_samples=64 \
    "model.stage1_run=$runs/vqvae_temporal_mnist5k_small" "out_dir=$runs" name=vq_prior
step eval-vq_prior python3 -m snngen eval "$runs/vq_prior" --n 64 --device $device
printf '\n%-40s %-8s %8s\n' "check" "result" "seconds"
for i in "${!names[@]}"; do
  printf '%-40s %-8s %8s\n' "${names[$i]}" "${results[$i]}" "${seconds[$i]}"
done | tee "$out/table.txt"
grep -q FAILED "$out/table.txt" && exit 1
exit 0
