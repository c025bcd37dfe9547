#!/usr/bin/env bash
# The GPU check: the CUDA tests, then GPU figures at the paper's defaults. Prints ONE JSON object on stdout
# (logs on stderr). Run from anywhere on a machine with an NVIDIA GPU; <= 8 minutes on one GPU:
#
#     bash benchmarks/gpu_check.sh            # > gpu_check.json
#     bash benchmarks/gpu_check.sh --smoke    # tiny sizes on the CPU, < 60 s (tests/test_gpu_check.py runs it)
#
# Python: $PYTHON if set, else the first of .venv/bin/python, python3, python that imports torch and lightning
# (with CUDA where nvidia-smi exists), else `make venv` (needs the network). Other arguments go to
# benchmarks/gpu_check.py (see its --help). The package is used in place (PYTHONPATH=repo root).
set -u
cd "$(dirname "$0")/.."
smoke=0
for a in "$@"; do [ "$a" = "--smoke" ] && smoke=1; done

usable() {  # usable PYTHON [cuda]: imports what the check needs (and sees a GPU when asked)
    local want="import torch, lightning, pyarrow, torchmetrics, pytest"
    [ "${2:-}" = cuda ] && want="$want; assert torch.cuda.is_available()"
    "$1" -c "$want" >/dev/null 2>&1
}
pick_python() {
    local mode=""
    [ "$smoke" = 0 ] && command -v nvidia-smi >/dev/null 2>&1 && mode=cuda
    for m in $mode ""; do
        for c in .venv/bin/python python3 python; do
            if command -v "$c" >/dev/null 2>&1 && usable "$c" "$m"; then echo "$c"; return; fi
        done
    done
    make venv >&2 && echo .venv/bin/python
}
PY=${PYTHON:-$(pick_python)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_WAIT_POLICY=PASSIVE
log=$(mktemp -d)
tests="tests/test_cuda.py"
echo "gpu_check: $PY; pytest $tests (log $log/pytest.txt)" >&2
timeout 120 "$PY" -m pytest -q -rs -p no:cacheprovider --junitxml "$log/junit.xml" $tests >"$log/pytest.txt" 2>&1
rc=$?
tail -n 25 "$log/pytest.txt" >&2
budget=270  # seconds after which gpu_check.py starts no new run; the hard limit below leaves one run 60 s more
[ "$smoke" = 1 ] && budget=45
timeout $((budget + 60)) "$PY" benchmarks/gpu_check.py --budget-s "$budget" --pytest-rc "$rc" \
    --pytest-junit "$log/junit.xml" --pytest-files $tests --partial "$log/partial.json" "$@" \
    >"$log/out.json" 2>"$log/gpu_check.txt"
status=$?
tail -n 25 "$log/gpu_check.txt" >&2
if [ -s "$log/out.json" ]; then
    tail -n 1 "$log/out.json"
elif [ -s "$log/partial.json" ]; then  # killed by the time limit: the figures so far, marked "incomplete"
    cat "$log/partial.json"; echo
else
    printf '{"check": "gpu_check", "error": "benchmarks/gpu_check.py exited %s without a result (log %s)", "tests_rc": %s}\n' \
        "$status" "$log/gpu_check.txt" "$rc"
fi
exit $status
