#!/bin/bash
# Issue 14's GPU check, prepared to run once on a lent device machine (one GPU, JAX and
# PyTorch, no TensorFlow, no internet), from the repository root:
#
#     bash benchmarks/device/gpu_check.sh OUT_DIR [EPOCHS]
#
# Beside the repository it needs two ignored folders, carried to the machine (README, "GPU
# check", says how to fill them):
#   .whl/     keras and the two of its dependencies that machine lacks (namex, optree), as wheels
#   .device/  the authors' checkout as .device/RECORDS-LTPLL and ../shared/data's CIFAR-10
#             image archive as .device/cifar10-jpg.tar.gz
#
# It runs, each under its own time limit so that one overrun cannot eat the others' time:
#   1. ltpll bench-step, ResNet-18, batch 256, mixed_bfloat16, JAX: images/s and full/bare
#   2. the authors' CORR + RECORDS step on the same GPU, batch 256, with their PIL DataLoader
#   3. ltpll train, CORR and then CORR + RECORDS, CIFAR-10-LT rho = 100, q = 0.5, EPOCHS each
# and leaves five small files in OUT_DIR: bench_step.json, official_step.json, corr.json and
# corr_records.json (the runs' metrics.json; a run stopped by its limit leaves its
# history.csv instead) and log.txt (everything printed). The limits add up to under 8 minutes
# (110 + 120 + 2 x 120 s); with the machine's start that fits one 15-minute device lease.
#
# GPU_CHECK_SMOKE=1 runs the same commands at toy sizes on a CPU (tiny backbone, a few steps,
# one epoch, the authors' step on the CPU), to try the script before spending device time;
# LTPLL, PYTHON and TORCH_PYTHON then name the ltpll command and the interpreters to use.
set -u -o pipefail
OUT=${1:?usage: gpu_check.sh OUT_DIR [EPOCHS]}
EPOCHS=${2:-20}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/ltpll-cache}
PYTHON=${PYTHON:-python3}
TORCH_PYTHON=${TORCH_PYTHON:-python3}
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
    BACKBONE=tiny; TORCH_BACKBONE=resnet-small; BATCH=32; STEPS=3; REPEATS=2; EPOCHS=1
    DEVICE=cpu; WORKERS=2
else
    BACKBONE=resnet18; TORCH_BACKBONE=resnet18; BATCH=256; STEPS=30; REPEATS=5
    DEVICE=cuda; WORKERS=12
fi
if [ -z "${LTPLL:-}" ]; then
    # The carried wheels into a scratch site, and ltpll laid out there as installed (cli/ is
    # the package ltpll.cli), without building a wheel of it (no build back end is needed).
    SITE=/tmp/ltpll-site
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || { echo "could not install the carried wheels"; exit 1; }
    rm -rf "$SITE/ltpll" && cp -r ltpll "$SITE/ltpll" && cp -r cli "$SITE/ltpll/cli" || exit 1
    mkdir -p "$SITE/bin" && printf 'import sys\nfrom ltpll.cli.main import main\nsys.exit(main())\n' \
        > "$SITE/bin/ltpll"
    export PYTHONPATH=$SITE
    LTPLL="$PYTHON $SITE/bin/ltpll"
fi
DATA=/tmp/ltpll-gpu-check/cifar10-jpg
RUNS=/tmp/ltpll-gpu-check/runs
rm -rf /tmp/ltpll-gpu-check && mkdir -p $DATA $RUNS
tar -xzf .device/cifar10-jpg.tar.gz -C $DATA || { echo "no .device/cifar10-jpg.tar.gz"; exit 1; }
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$PYTHON" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"

echo "== 1. ltpll bench-step, $BACKBONE, batch $BATCH, bf16, JAX  $(date +%T)"
timeout 110 $LTPLL bench-step --backbone $BACKBONE --batch-size $BATCH \
    --precision mixed_bfloat16 --steps $STEPS --repeats $REPEATS --json > "$OUT/bench_step.json"
echo "rc=$?"
"$PYTHON" - "$OUT/bench_step.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("full %.2f ms/step (%.0f images/s), bare %.2f ms/step, full/bare %.3f (rounds %.3f-%.3f)"
      % (d["full"]["median"], d["full"]["images_per_s"], d["bare"]["median"],
         d["overhead_ratio"], min(d["paired_ratios"]), max(d["paired_ratios"])))
PY

echo "== 2. the authors' step, $TORCH_BACKBONE, batch $BATCH, on $DEVICE  $(date +%T)"
timeout 120 "$TORCH_PYTHON" benchmarks/official/torch_step.py --official .device/RECORDS-LTPLL \
    --data $DATA --backbone $TORCH_BACKBONE --batch-size $BATCH --workers $WORKERS \
    --device $DEVICE --warmup 5 --steps $STEPS --json-out "$OUT/official_step.json"
echo "rc=$?"
"$PYTHON" - "$OUT/official_step.json" $BATCH <<'PY'
import json, statistics, sys
d = json.load(open(sys.argv[1]))
ms = statistics.median(d["ms_per_step"])
print("authors: %.2f ms/step (%.0f images/s), %.2f ms of it waiting for the DataLoader, on %s"
      % (ms, 1000.0 * int(sys.argv[2]) / ms, statistics.median(d["wait_ms"]), d["device"]))
PY

for records in "" "--records"; do
    name=corr${records:+_records}
    echo "== 3. ltpll train $name, $EPOCHS epochs  $(date +%T)"
    timeout 120 $LTPLL train --dataset $DATA --imbalance-ratio 100 --partial-rate 0.5 \
        --method corr $records --backbone $BACKBONE --batch-size $BATCH --epochs "$EPOCHS" \
        --precision mixed_bfloat16 --seed 1 --output $RUNS/$name
    echo "rc=$?"
    cp $RUNS/$name/metrics.json "$OUT/$name.json" 2>/dev/null \
        || cp $RUNS/$name/history.csv "$OUT/$name.history.csv" 2>/dev/null \
        || echo "no metrics for $name"
done
"$PYTHON" - "$OUT" $BATCH $BACKBONE $TORCH_BACKBONE <<'PY'
import json, os, statistics, sys
out, batch, ours_name, theirs_name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    ours = json.load(open(os.path.join(out, "bench_step.json")))["full"]["images_per_s"]
    theirs = 1000.0 * batch / statistics.median(
        json.load(open(os.path.join(out, "official_step.json")))["ms_per_step"])
    print("ltpll (%s) / authors (%s) images/s: %.0f / %.0f = %.2fx"
          % (ours_name, theirs_name, ours, theirs, ours / theirs))
except (OSError, ValueError, KeyError) as error:
    print("no ratio:", error)
for name in ("corr", "corr_records"):
    try:
        m = json.load(open(os.path.join(out, name + ".json")))
        print("%-13s top-1 %.2f%%  many/medium/few %.2f/%.2f/%.2f" % (
            name, 100 * m["top1"], 100 * m["many"], 100 * m["medium"], 100 * m["few"]))
    except (OSError, ValueError, KeyError) as error:
        print(name, "no metrics:", error)
PY
echo "== done  $(date +%T)"
