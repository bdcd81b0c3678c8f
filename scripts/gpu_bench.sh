#!/usr/bin/env bash
# GPU figures: the benchmark group `gpu` (tf_cme/benchmarks/gpu.py) on Keras's JAX backend,
# each stage beside the same network in PyTorch on the same GPU, in one run. For a GPU host
# where TensorFlow is not installed (or does not see the GPU): it needs JAX with CUDA,
# PyTorch with CUDA and Keras 3.15.1 (`pip install keras==3.15.1`, or WHEELS=DIR holding
# its wheels and the missing dependencies, installed into /tmp/site without an index). Writes into OUT_DIR: gpu.txt (device,
# versions), bench-gpu.json (the rows, one by one, so a run cut short keeps what it
# finished), bench-gpu.log and bench-gpu.md (the README's table).
#
#   scripts/gpu_bench.sh OUT_DIR
#   env: PYTHON (python3), REPEATS (3), ONLY (gpu: a group or stages, comma-separated),
#        WHEELS (a folder of wheels to install first), BUDGET_S (stop the measurements
#        after this many seconds, keeping the rows finished, and still write the table),
#        QUICK=1 (tiny sizes: a smoke run on a CPU), XLA_PYTHON_CLIENT_MEM_FRACTION (0.45:
#        JAX's share of the GPU memory, the rest is PyTorch's)
set -euo pipefail
out=${1:?usage: scripts/gpu_bench.sh OUT_DIR}
py=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$out"
if [ -n "${WHEELS:-}" ]; then
  compgen -G "$WHEELS/*.whl" >/dev/null || { echo "gpu_bench: no wheels in WHEELS=$WHEELS" >&2; exit 2; }
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi") > "$out/gpu.txt"
"$py" -c "import jax, keras, torch; print('jax', jax.__version__, jax.devices()); print('keras', keras.__version__, keras.backend.backend()); print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'no cuda')" | tee -a "$out/gpu.txt"
args=(--backend jax --only "${ONLY:-gpu}" --in-process --repeats "${REPEATS:-3}" --out "$out/bench-gpu.json")
[ "${QUICK:-0}" = 1 ] && args+=(--quick)
limit=()
[ -n "${BUDGET_S:-}" ] && limit=(timeout -s INT "$BUDGET_S")
rc=0
"${limit[@]}" "$py" scripts/bench.py "${args[@]}" 2>&1 | tee "$out/bench-gpu.log" || rc=$?
[ "$rc" = 0 ] || echo "gpu_bench: bench.py ended with status $rc (124: BUDGET_S reached); the table holds the rows it finished" | tee -a "$out/bench-gpu.log" >&2
[ -s "$out/bench-gpu.json" ] || { echo "gpu_bench: no rows were finished" >&2; exit 1; }
"$py" scripts/bench.py --markdown "$out/bench-gpu.json" | tee "$out/bench-gpu.md"
exit "$rc"
