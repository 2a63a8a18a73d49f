#!/usr/bin/env bash
# The CUDA paths on one GPU in at most about 5 minutes: one PASS/FAIL line per check, then the
# supernet step times. Run it whenever a GPU is at hand (README "Checking the GPU paths").
#
#   scripts/gpu_check.sh                    # every check on cuda
#   scripts/gpu_check.sh --only hvp         # one check (eval, amp, hvp, ddp, bench, resume)
#   scripts/gpu_check.sh --device cpu       # the dry rehearsal: the same checks on the CPU
#
# Each check runs `python scripts/gpu_check.py CHECK --device DEVICE` under its own timeout
# (--timeout SECONDS, 120 by default; the benchmark gets 300 on a GPU). Exit code: the number of
# checks that failed.
set -u
cd "$(dirname "$0")/.."
device=cuda
only=""
limit=120
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --timeout) limit="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
checks="eval amp hvp ddp bench resume"
if [ -n "$only" ]; then
  case " $checks " in
    *" $only "*) checks="$only" ;;
    *) echo "gpu_check.sh: --only $only: not one of: $checks" >&2; exit 2 ;;
  esac
fi
python -c "import torch, sys; print(f'torch {torch.__version__}, cuda available: {torch.cuda.is_available()}' + (f', {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else ''))"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
failed=0
summary=()
for check in $checks; do
  seconds=$limit
  [ "$check" = bench ] && [ "$device" != cpu ] && seconds=300
  log=$(mktemp)
  timeout --signal=TERM --kill-after=10 "$seconds" python scripts/gpu_check.py "$check" --device "$device" >"$log" 2>&1
  code=$?
  result=$(grep -E "^(PASS|FAIL) $check" "$log" | tail -n 1)
  if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
    result="FAIL $check: timed out after ${seconds}s"
  elif [ -z "$result" ]; then
    result="FAIL $check: exit code $code, no result line"
  fi
  case "$result" in PASS*) ;; *) failed=$((failed + 1)); tail -n 20 "$log" | sed 's/^/    /' ;; esac
  [ "$check" = bench ] && grep -vE "^(PASS|FAIL)" "$log" | sed 's/^/    /'
  echo "$result"
  summary+=("$result")
  rm -f "$log"
done
echo
echo "gpu_check ($device): $(( ${#summary[@]} - failed ))/${#summary[@]} passed"
exit "$failed"
