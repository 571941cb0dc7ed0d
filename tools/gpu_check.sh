#!/usr/bin/env bash
# GPU check of the GLIP re-implementation, one script, under 8 minutes on one GPU:
#   1. build glip._C with its CUDA kernels (FORCE_CUDA=1, only the visible GPU's architecture) in place;
#   2. run the tests marked `cuda` (CUDA DCN forward/backward and ml_nms against the CPU kernels, GLIP-T
#      detections on the GPU against the goldens, an fp16 AMP training step, a torchrun DDP step over NCCL);
#   3. benchmark GLIP-T on the GPU: inference ms/image at 800x1333 (network input 800x1344) in fp32 and fp16,
#      and training images/s (batch 2, 800 px, fp32 and fp16 AMP).
# Usage: tools/gpu_check.sh [OUT_DIR]   (PYTHON=... to choose the interpreter; logs and JSON go to OUT_DIR,
# default gpu_check_out/). Exit status: non-zero when the build, a test or a benchmark fails.
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-gpu_check_out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
status=0
step() { echo "== $(date -u +%H:%M:%S) $*"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.txt"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" || exit 1

step "build glip._C with CUDA"
ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
if ! FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=${MAX_JOBS:-16} timeout 300 \
        "$PY" setup.py build_ext --inplace > "$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"; echo "build failed (log: $OUT/build.log)"; exit 1
fi
"$PY" -c "import torch; from glip.layers import extension as e; import sys; \
sys.exit(0 if e.supports(torch.device('cuda')) else 'glip._C has no CUDA kernels: is CUDA_HOME set? see build.log')" \
    || { tail -20 "$OUT/build.log"; exit 1; }

step "tests marked cuda"
timeout 300 "$PY" -m pytest -q -m cuda tests -p no:randomly --junitxml="$OUT/cuda_tests.xml" 2>&1 \
    | tee "$OUT/cuda_tests.log" | tail -30 || status=1

CONFIG=configs/pretrain/glip_Swin_T_O365_GoldG.yaml
for amp in none float16; do
    step "GLIP-T inference on the GPU, amp=$amp"
    timeout 120 "$PY" tools/benchmark.py --config-file "$CONFIG" --size 800x1344 --device cuda --amp "$amp" \
        --runs 20 --warmup 3 --json "$OUT/infer_$amp.json" 2>&1 | tail -8 || status=1
    step "GLIP-T training step on the GPU, amp=$amp"
    timeout 150 "$PY" tools/benchmark.py --config-file "$CONFIG" --train --size 800x1344 --batch-size 2 \
        --device cuda --amp "$amp" --runs 10 --warmup 3 --json "$OUT/train_$amp.json" 2>&1 | tail -8 || status=1
done

step "done, status $status (outputs in $OUT)"
exit $status
