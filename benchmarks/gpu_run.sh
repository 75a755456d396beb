#!/usr/bin/env bash
# One command for a fresh GPU machine, run from anywhere inside the repo:
#
#   bash benchmarks/gpu_run.sh
#
# 1. prints nvidia-smi and torch's version and device; stops if there is no CUDA;
# 2. runs benchmarks/throughput.py (ours vs the reference loop) -> $OUT/throughput-<model>.json;
# 3. trains the plan's missing runs: python -m cnnlib train-missing --profile $PROFILE, with a
#    --budget of GPU_WALL_S minus the time already spent minus MARGIN_S, under a hard timeout;
# 4. on exit, whatever happened in 3 (killed, failed, interrupted), packs every run folder of
#    $CNNLIB_RESULTS that is new or changed, the log and the benchmark JSON into ONE archive
#    $OUT/results.tar.gz. Unpack it at the repo root: results/<run>/... and
#    benchmarks/gpu_runs/<UTC time>/{log.txt,throughput-*.json}.
#
# Environment (all optional):
#   OUT=./gpu_out                where the log, the JSON and the archive go
#   CNNLIB_DATA=./.data          the CIFAR-10 data (e.g. a folder holding the JPEG tarball)
#   CNNLIB_RESULTS=./results     the results store (run folders)
#   CNNLIB_CHECKPOINTS=./checkpoints   per-epoch checkpoints (not packed: too large)
#   PROFILE=full                 training profile of step 3 (smoke for a dry run on a CPU)
#   GPU_WALL_S=540               total wall-clock limit of this script, seconds; keep it below
#                                the limit of whatever runs it (the archive is made at exit)
#   MARGIN_S=60                  kept free for packing: training gets GPU_WALL_S - spent - MARGIN_S
#   BENCH_MODEL=resnet18 BENCH_IMAGES=20480 BENCH_BATCH=512 BENCH_ROUNDS=3 BENCH_TIMEOUT_S=180
#                                step 2; BENCH_IMAGES=0 skips it
#   ARCHIVE_PART_MB=15           an archive larger than this is split into results.tar.gz.part-NN
#   SKIP_GPU_CHECK=1             go on without CUDA (dry run on a CPU)
#   PYTHON=python3               the interpreter
# A folder .whl/ of wheels (e.g. torchinfo), if present, is installed first, offline.
set -uo pipefail
export PYTHONUNBUFFERED=1

START_S=$(date +%s)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2  # the repo root

PYTHON=${PYTHON:-python3}
PROFILE=${PROFILE:-full}
GPU_WALL_S=${GPU_WALL_S:-540}
MARGIN_S=${MARGIN_S:-60}
BENCH_MODEL=${BENCH_MODEL:-resnet18}
BENCH_IMAGES=${BENCH_IMAGES:-20480}
BENCH_BATCH=${BENCH_BATCH:-512}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-180}
ARCHIVE_PART_MB=${ARCHIVE_PART_MB:-15}
export CNNLIB_DATA=${CNNLIB_DATA:-./.data}
export CNNLIB_RESULTS=${CNNLIB_RESULTS:-./results}
export CNNLIB_CHECKPOINTS=${CNNLIB_CHECKPOINTS:-./checkpoints}
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT" "$CNNLIB_RESULTS" || exit 2
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/log.txt"
BENCH_JSON="$OUT/throughput-$BENCH_MODEL.json"
MARK="$OUT/.start-marker"  # run folders with a file newer than this are packed
touch "$MARK"

exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

elapsed() { echo $(( $(date +%s) - START_S )); }
say() { echo "[gpu_run +$(elapsed)s] $*"; }

pack() {
    local rc=$?
    trap - EXIT INT TERM HUP
    say "packing (exit status so far: $rc)"
    local res stage runs=() d
    res=$(cd "$CNNLIB_RESULTS" && pwd)
    stage=$(mktemp -d)
    mkdir -p "$stage/results" "$stage/benchmarks/gpu_runs/$STAMP"
    for d in "$res"/*/; do
        d=${d%/}
        [ -d "$d" ] || continue
        # new or changed: the folder or a file in it is newer than the start marker
        [ -n "$(find "$d" -maxdepth 1 -newer "$MARK" -print -quit)" ] || continue
        if [ -f "$d/run.json" ]; then
            cp -r "$d" "$stage/results/" && runs+=("$(basename "$d")")
        else
            say "not packed (unfinished, no run.json): $d"
        fi
    done
    say "packing ${#runs[@]} new or changed run(s): ${runs[*]:-none}"
    [ -f "$BENCH_JSON" ] && cp "$BENCH_JSON" "$stage/benchmarks/gpu_runs/$STAMP/"
    cp "$LOG" "$stage/benchmarks/gpu_runs/$STAMP/log.txt"  # the log up to this line
    if tar -C "$stage" -czf "$OUT/.results.tar.gz.tmp" results benchmarks \
        && mv "$OUT/.results.tar.gz.tmp" "$OUT/results.tar.gz"; then
        say "wrote $OUT/results.tar.gz ($(du -h "$OUT/results.tar.gz" | cut -f1)); unpack it at the repo root"
        # the device tool returns files of at most 16 MiB: split a larger archive (model.pt of
        # the small models adds up to ~3 MB per run); join with: cat results.tar.gz.part-* > ...
        if [ "$(stat -c %s "$OUT/results.tar.gz")" -gt $(( ARCHIVE_PART_MB * 1024 * 1024 )) ]; then
            split -b "${ARCHIVE_PART_MB}M" -d "$OUT/results.tar.gz" "$OUT/results.tar.gz.part-" \
                && rm "$OUT/results.tar.gz" \
                && say "split into $(ls "$OUT"/results.tar.gz.part-* | wc -l) parts of ${ARCHIVE_PART_MB} MB:" \
                       "cat results.tar.gz.part-* > results.tar.gz"
        fi
    else
        say "ERROR: packing failed"
        [ "$rc" = 0 ] && rc=1
    fi
    rm -rf "$stage" "$MARK"
    say "done in $(elapsed) s, exit status $rc"
    exec >&- 2>&-
    wait "$TEE_PID" 2>/dev/null
    exit "$rc"
}
trap pack EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

say "repo $(pwd), profile $PROFILE, wall limit ${GPU_WALL_S}s, out $OUT"
say "data $CNNLIB_DATA, results $CNNLIB_RESULTS, checkpoints $CNNLIB_CHECKPOINTS"

# --- 0. optional offline wheels (packages the machine lacks: torchinfo, tqdm, ...) ---
if compgen -G ".whl/*.whl" >/dev/null; then
    site=${WHEEL_SITE:-/tmp/cnnlib-site}
    if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        say "installed $(ls .whl/*.whl | wc -l) wheel(s) from .whl/ into $site"
    else
        say "WARNING: installing the wheels in .whl/ failed; going on without them"
    fi
fi

# --- 1. the machine ---
say "== 1. device"
nvidia-smi || say "nvidia-smi failed or is missing"
"$PYTHON" -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')" \
    || { say "ERROR: $PYTHON cannot import torch"; exit 3; }
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if [ "${SKIP_GPU_CHECK:-0}" = 1 ]; then
        say "no CUDA device; going on because SKIP_GPU_CHECK=1 (dry run)"
    else
        say "ERROR: no CUDA device visible to torch; stopping (set SKIP_GPU_CHECK=1 for a dry run)"
        exit 3
    fi
fi
"$PYTHON" -c "import tqdm, pandas" || { say "ERROR: tqdm or pandas missing: put wheels in .whl/"; exit 3; }
[ -e "$CNNLIB_DATA" ] || { say "ERROR: no data at CNNLIB_DATA=$CNNLIB_DATA (carry the CIFAR-10 tarball there)"; exit 3; }

# --- 2. throughput: ours vs the reference loop ---
if [ "$BENCH_IMAGES" -gt 0 ]; then
    say "== 2. throughput benchmark ($BENCH_MODEL, $BENCH_IMAGES images, batch $BENCH_BATCH)"
    rm -f "$BENCH_JSON"
    timeout --foreground --signal=INT --kill-after=10 "$BENCH_TIMEOUT_S" \
        "$PYTHON" benchmarks/throughput.py --model "$BENCH_MODEL" --images "$BENCH_IMAGES" \
        --device auto --batch-size "$BENCH_BATCH" --rounds "$BENCH_ROUNDS" --json "$BENCH_JSON"
    bench_rc=$?
    [ "$bench_rc" = 0 ] || say "WARNING: the benchmark ended with status $bench_rc; going on"
else
    say "== 2. throughput benchmark skipped (BENCH_IMAGES=0)"
fi

# --- 3. train the missing runs within what is left of the wall limit ---
budget=$(( GPU_WALL_S - $(elapsed) - MARGIN_S ))
# hard stop: SIGINT (the CLI then exits cleanly; finished epochs are checkpointed), SIGKILL 10 s
# later; leaves MARGIN_S/2 for packing even if a run overshoots its estimate
hard=$(( GPU_WALL_S - $(elapsed) - MARGIN_S / 2 - 10 ))
if [ "$budget" -le 0 ]; then
    say "== 3. no time left for training (budget ${budget}s)"
    train_rc=0
else
    say "== 3. train-missing --profile $PROFILE --budget $budget (hard timeout ${hard}s)"
    timeout --foreground --signal=INT --kill-after=10 "$hard" \
        "$PYTHON" -m cnnlib train-missing --profile "$PROFILE" --budget "$budget"
    train_rc=$?
    case $train_rc in
        0) ;;
        124|137) say "WARNING: train-missing was stopped by the hard timeout (status $train_rc);" \
                     "finished runs are stored and packed, the interrupted one is not"
                 train_rc=0 ;;  # by design: the archive still holds every finished run
        *) say "WARNING: train-missing ended with status $train_rc" ;;
    esac
    "$PYTHON" -m cnnlib status --profile "$PROFILE" | tail -n 1
fi
exit "$train_rc"  # -> pack
