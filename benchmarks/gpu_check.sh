#!/usr/bin/env bash
# Every GPU check in one go, within a time budget: the `gpu`-marked tests first (synthetic data:
# they need no MNIST), then benchmarks/gpu_speed.py's sections, each on its own. The machine needs
# no network and may have another torch than constraints.txt pins.
#
#   bash benchmarks/gpu_check.sh prepare   # here, with network: fills .gpu-carry/ (git-ignored, ~25 MB):
#                                          # MNIST's four IDX files gzipped, and wheels of the serve
#                                          # extra for Python 3.12 (FastAPI, uvicorn, ...)
#   bash benchmarks/gpu_check.sh run [OUT] # there, from the working tree, with .gpu-carry/ beside it;
#                                          # writes gpu_tests.log, gpu_speed.log and gpu_speed.json to OUT
# Settings of `run`, as environment variables:
#   GPU_CHECK_BUDGET_S  seconds for the whole run (default 400); the speed sections that would not
#                       fit are skipped and say so, and what finished is in gpu_speed.json
#   GPU_TESTS           pytest's selection (default: all of tests/kernels/test_gpu.py); "skip" skips them
#   GPU_SPEED_ARGS      more arguments for gpu_speed.py (--sections a,b; --quick; --device cpu)
# A rerun that skips what passed: copy the first run's gpu_speed.json to .gpu-carry/gpu_speed.json;
# its sections with figures are kept and only the others run.
# A dry run on a CPU machine, to check the script: PYTHON=.venv/bin/python CNN_MNIST_GPU_TEST_DEVICE=cpu
#   GPU_SPEED_ARGS="--device cpu --quick" bash benchmarks/gpu_check.sh run /tmp/gpu-check
set -euo pipefail
python=${PYTHON:-python3}
carry=.gpu-carry
case "${1:-}" in
prepare)
    data=${CNN_MNIST_DATA:-$HOME/.cache/cnn_mnist}
    mkdir -p "$carry/mnist" "$carry/wheels"
    for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        [ -f "$data/$name" ] || { echo "no $data/$name: run cnn-mnist download first" >&2; exit 1; }
        gzip -9 -c "$data/$name" > "$carry/mnist/$name.gz"
    done
    # The serve extra and what it needs beyond that machine's image, at the versions this venv uses.
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$carry/wheels" $(.venv/bin/pip freeze | grep -i -E \
        '^(fastapi|starlette|pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions|opentelemetry[-_]api|anyio|uvicorn|python[-_]multipart)==')
    du -sh "$carry"
    ;;
run)
    out=${2:-${OUT:-gpu-check}}
    mkdir -p "$out"
    budget=${GPU_CHECK_BUDGET_S:-400}
    export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
    status=0
    # The carried wheels whose distribution that Python lacks, and only those: a carried copy of
    # one it has (typing-extensions, anyio) would shadow its own, since PYTHONPATH comes first.
    if compgen -G "$carry/wheels/*.whl" > /dev/null; then
        missing=$("$python" - "$carry"/wheels/*.whl <<'PY'
import importlib.metadata, os, sys
for wheel in sys.argv[1:]:
    name = os.path.basename(wheel).split("-")[0]
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
PY
        )
        if [ -n "$missing" ]; then
            echo "installing what that Python lacks: $(echo "$missing" | xargs -n1 basename | cut -d- -f1 | xargs)"
            "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
                $missing || echo "could not install the carried wheels: the service test will skip"
            export PYTHONPATH=$PYTHONPATH:/tmp/site
        fi
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || status=$?
    left() { local s=$(( budget - SECONDS )); echo $(( s > 1 ? s : 1 )); }  # timeout 0 would mean none
    # 1. The tests: synthetic data, so they run whatever happens to MNIST. tests/kernels/test_gpu.py
    #    alone: other test modules import tools that machine may lack (schemathesis, ...).
    if [ "${GPU_TESTS:-}" != skip ]; then
        timeout -s INT -k 15 $(( $(left) / 2 + 1 )) "$python" -m pytest -m gpu -q -rs -p no:cacheprovider \
            ${GPU_TESTS:-tests/kernels/test_gpu.py} 2>&1 | tee "$out/gpu_tests.log" || status=1
    fi
    # 2. MNIST, for the benchmark alone.
    export CNN_MNIST_DATA=/tmp/mnist
    if ! "$python" -m cnn_mnist download --source-dir "$carry/mnist" --data-dir "$CNN_MNIST_DATA"; then
        echo "no MNIST (run 'bash benchmarks/gpu_check.sh prepare' here and carry .gpu-carry): no speed figures" \
            | tee "$out/gpu_speed.log"
        exit 1
    fi
    # 3. The benchmark's sections, each on its own, the JSON rewritten after each.
    speed=(--data-dir "$CNN_MNIST_DATA" --json "$out/gpu_speed.json")
    if [ -f "$carry/gpu_speed.json" ]; then
        cp "$carry/gpu_speed.json" "$out/gpu_speed.json"
        speed+=(--skip-done)
    fi
    timeout -s INT -k 15 $(( $(left) > 20 ? $(left) : 20 )) "$python" benchmarks/gpu_speed.py "${speed[@]}" \
        --budget-s $(( $(left) - 10 )) ${GPU_SPEED_ARGS:-} 2>&1 | tee "$out/gpu_speed.log" || status=1
    echo "gpu_check: $SECONDS s"
    exit $status
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh prepare | run [OUT]" >&2
    exit 2
    ;;
esac
