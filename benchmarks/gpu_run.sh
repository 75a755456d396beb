#!/usr/bin/env bash
# The GPU run: train the study's missing runs on one CUDA machine within one command's time
# limit, then pack what was trained. Run from anywhere inside the repo:
#
#   OUT=/some/empty/folder bash benchmarks/gpu_run.sh
#
# A second call right after the first (same machine, same SCRATCH) continues where the first
# stopped: finished runs are kept in SCRATCH, unfinished ones resume from their checkpoints.
# benchmarks/RESULTS.md ("The GPU run") says what travels with it and what to do with $OUT.
#
# 1. checks the machine (CUDA, torch, data) and seeds $SCRATCH/results with the committed
#    results/, so that the plan knows what exists;
# 2. trains: python -m cnnlib train-missing, with a budget that ends SPARE_S seconds before
#    COMMAND_S (runs that would end later stop checkpointed instead), under a hard timeout;
# 3. if time is left, a short throughput benchmark (ours vs the reference loop);
# 4. on exit, whatever happened, packs into $OUT at most 8 files, each under 16 MiB:
#      results.tar.gz           results/<run>/ of every run new or changed on this machine,
#                               benchmarks/gpu_runs/<UTC time>/{log.txt,throughput.json}
#      weights.tar.gz[.part-NN] weights/<run>/model.pt of those runs (small models only)
#      log.txt                  this script's log
#    Unpack both archives at the repo root (weights/ is git-ignored).
#
# Environment (all optional):
#   OUT=./gpu_out               where the files go
#   SCRATCH=./scratch           results, checkpoints and weights on this machine (git-ignored)
#   CNNLIB_DATA=./.data         the CIFAR-10 data (a folder holding cifar10-jpg.tar.gz)
#   PROFILE=full                training profile (smoke for a dry run on a CPU)
#   COMMAND_S=600               the time limit of whatever runs this script, seconds
#   SPARE_S=45                  training stops this long before COMMAND_S, for packing
#   WORKERS=1                   units trained at once, as separate processes on the one GPU
#   MODELS=                     only the runs of these models (space-separated; default: all)
#   CHECKPOINT_EVERY_S=60       a run checkpoints at most this often (0: every epoch)
#   BENCH_S=60                  time the benchmark may take (0: skip it); it runs only if
#                               BENCH_S + SPARE_S are left after training
#   BENCH_MODEL=resnet18 BENCH_IMAGES=10240
#   SKIP_GPU_CHECK=1            go on without CUDA (a dry run on a CPU)
#   KNOWN_RESULTS=./results     the runs that count as done (the committed ones; tests pass a copy)
#   PYTHON=python3              the interpreter
set -uo pipefail
export PYTHONUNBUFFERED=1

START_S=$(date +%s)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2  # the repo root
REPO=$(pwd)
KNOWN_RESULTS=${KNOWN_RESULTS:-$REPO/results}

PYTHON=${PYTHON:-python3}
PROFILE=${PROFILE:-full}
COMMAND_S=${COMMAND_S:-600}
SPARE_S=${SPARE_S:-45}
WORKERS=${WORKERS:-1}
MODELS=${MODELS:-}
CHECKPOINT_EVERY_S=${CHECKPOINT_EVERY_S:-60}
BENCH_S=${BENCH_S:-60}
BENCH_MODEL=${BENCH_MODEL:-resnet18}
BENCH_IMAGES=${BENCH_IMAGES:-10240}
SCRATCH=${SCRATCH:-./scratch}
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT" "$SCRATCH/results" "$SCRATCH/checkpoints" "$SCRATCH/weights" || exit 2
OUT=$(cd "$OUT" && pwd)
SCRATCH=$(cd "$SCRATCH" && pwd)
export CNNLIB_DATA=${CNNLIB_DATA:-./.data}
export CNNLIB_RESULTS=$SCRATCH/results
export CNNLIB_CHECKPOINTS=$SCRATCH/checkpoints
export CNNLIB_WEIGHTS=$SCRATCH/weights
export CNNLIB_DOWNLOAD=0  # the device has no internet: carry the data
LOG="$OUT/log.txt"
BENCH_JSON="$SCRATCH/throughput.json"
PART_MB=15

exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

elapsed() { echo $(( $(date +%s) - START_S )); }
say() { echo "[gpu_run +$(elapsed)s] $*"; }

pack() {
    local rc=$?
    trap - EXIT INT TERM HUP
    say "packing (exit status so far: $rc)"
    local stage runs=() d name
    stage=$(mktemp -d)
    mkdir -p "$stage/r/results" "$stage/r/benchmarks/gpu_runs/$STAMP" "$stage/w/weights"
    for d in "$CNNLIB_RESULTS"/*/; do
        d=${d%/}
        name=$(basename "$d")
        [ -f "$d/run.json" ] || continue  # unfinished: resumes from its checkpoint
        # new or changed on this machine: its run.json differs from the committed one
        cmp -s "$d/run.json" "$KNOWN_RESULTS/$name/run.json" && continue
        cp -r "$d" "$stage/r/results/" && runs+=("$name")
        [ -f "$CNNLIB_WEIGHTS/$name/model.pt" ] && mkdir -p "$stage/w/weights/$name" \
            && cp "$CNNLIB_WEIGHTS/$name/model.pt" "$stage/w/weights/$name/"
    done
    say "packing ${#runs[@]} new or changed run(s): ${runs[*]:-none}"
    [ -f "$BENCH_JSON" ] && cp "$BENCH_JSON" "$stage/r/benchmarks/gpu_runs/$STAMP/"
    cp "$LOG" "$stage/r/benchmarks/gpu_runs/$STAMP/log.txt"  # the log up to this line
    rm -f "$OUT"/results.tar.gz "$OUT"/weights.tar.gz*
    if tar -C "$stage/r" -czf "$OUT/results.tar.gz" results benchmarks; then
        say "wrote results.tar.gz ($(du -h "$OUT/results.tar.gz" | cut -f1))"
    else
        say "ERROR: packing the results failed"
        [ "$rc" = 0 ] && rc=1
    fi
    if [ -n "$(ls -A "$stage/w/weights")" ] && tar -C "$stage/w" -czf "$OUT/weights.tar.gz" weights; then
        if [ "$(stat -c %s "$OUT/weights.tar.gz")" -gt $(( PART_MB * 1024 * 1024 )) ]; then
            split -b "${PART_MB}M" -d "$OUT/weights.tar.gz" "$OUT/weights.tar.gz.part-" && rm "$OUT/weights.tar.gz"
            local parts=("$OUT"/weights.tar.gz.part-*)
            if [ "${#parts[@]}" -gt 5 ]; then  # 8 files at most come back: keep the tables
                say "WARNING: the weights need ${#parts[@]} parts; not returned (retrain to get them)"
                rm -f "$OUT"/weights.tar.gz.part-*
            else
                say "weights split into ${#parts[@]} parts: cat weights.tar.gz.part-* > weights.tar.gz"
            fi
        fi
    fi
    rm -rf "$stage"
    say "done in $(elapsed) s, exit status $rc"
    exec >&- 2>&-
    wait "$TEE_PID" 2>/dev/null
    exit "$rc"
}
trap pack EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

say "repo $REPO, profile $PROFILE, command limit ${COMMAND_S}s, spare ${SPARE_S}s, workers $WORKERS"
say "data $CNNLIB_DATA, scratch $SCRATCH, out $OUT"

# --- 1. the machine ---
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || say "nvidia-smi failed or is missing"
"$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')" \
    || { say "ERROR: $PYTHON cannot import torch"; exit 3; }
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if [ "${SKIP_GPU_CHECK:-0}" = 1 ]; then
        say "no CUDA device; going on because SKIP_GPU_CHECK=1 (dry run)"
    else
        say "ERROR: no CUDA device visible to torch; stopping (set SKIP_GPU_CHECK=1 for a dry run)"
        exit 3
    fi
fi
[ -e "$CNNLIB_DATA" ] || { say "ERROR: no data at CNNLIB_DATA=$CNNLIB_DATA (carry cifar10-jpg.tar.gz there)"; exit 3; }
for d in "$KNOWN_RESULTS"/*/; do  # what is committed counts as done; what this machine trained wins
    [ -d "$d" ] && [ ! -e "$CNNLIB_RESULTS/$(basename "$d")" ] && cp -r "$d" "$CNNLIB_RESULTS/"
done

# --- 2. train the missing runs ---
budget=$(( COMMAND_S - $(elapsed) - SPARE_S ))
if [ "$budget" -le 10 ]; then
    say "no time left for training (budget ${budget}s)"
    train_rc=0
else
    say "train-missing --profile $PROFILE --budget $budget --workers $WORKERS${MODELS:+ --models $MODELS}"
    # the runs stop themselves before the deadline; the timeout is the last resort
    timeout --foreground --signal=INT --kill-after=5 $(( budget + SPARE_S / 3 )) \
        "$PYTHON" -m cnnlib train-missing --profile "$PROFILE" --policy units --budget "$budget" \
        --workers "$WORKERS" --checkpoint-every "$CHECKPOINT_EVERY_S" ${MODELS:+--models $MODELS}
    train_rc=$?
    case $train_rc in
        0) ;;
        124|130|137) say "WARNING: train-missing was stopped by the hard timeout (status $train_rc);" \
                         "finished runs are packed, the interrupted one resumes from its checkpoint"
                     train_rc=0 ;;
        *) say "WARNING: train-missing ended with status $train_rc" ;;
    esac
    "$PYTHON" -m cnnlib status --profile "$PROFILE" | tail -n 1
fi

# --- 3. a short throughput benchmark, if time is left ---
left=$(( COMMAND_S - $(elapsed) - SPARE_S ))
if [ "$BENCH_S" -gt 0 ] && [ "$left" -ge "$BENCH_S" ] && [ ! -f "$BENCH_JSON" ]; then
    say "throughput benchmark ($BENCH_MODEL, $BENCH_IMAGES images)"
    timeout --foreground --signal=INT --kill-after=5 "$BENCH_S" \
        "$PYTHON" benchmarks/throughput.py --model "$BENCH_MODEL" --images "$BENCH_IMAGES" \
        --device auto --batch-size 512 --rounds 2 --json "$BENCH_JSON" \
        || say "WARNING: the benchmark did not finish; going on"
else
    say "throughput benchmark skipped (${left}s left, BENCH_S=$BENCH_S)"
fi
exit "$train_rc"  # -> pack
