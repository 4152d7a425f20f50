#!/usr/bin/env bash
# Every GPU check in one go: the `gpu`-marked tests, then benchmarks/gpu_speed.py. About 5 minutes
# on one H200; the machine needs no network and may have another torch than constraints.txt pins.
#
#   bash benchmarks/gpu_check.sh prepare   # here, with network: fills .gpu-carry/ (git-ignored, ~25 MB):
#                                          # MNIST's four IDX files gzipped, and wheels of the serve
#                                          # extra for Python 3.12 (FastAPI, uvicorn, ...)
#   bash benchmarks/gpu_check.sh run [OUT] # there, from the working tree, with .gpu-carry/ beside it;
#                                          # writes gpu_tests.log, gpu_speed.log and gpu_speed.json to OUT
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
    export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
    if ! "$python" -c "import fastapi, uvicorn, multipart" 2> /dev/null && compgen -G "$carry/wheels/*.whl" > /dev/null; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$carry"/wheels/*.whl
        export PYTHONPATH=$PYTHONPATH:/tmp/site
    fi
    export CNN_MNIST_DATA=/tmp/mnist
    "$python" -m cnn_mnist download --source-dir "$carry/mnist" --data-dir "$CNN_MNIST_DATA"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    status=0
    # tests/kernels/test_gpu.py alone: other test modules import tools that machine may lack (schemathesis, ...)
    "$python" -m pytest -m gpu -q -rs -p no:cacheprovider tests/kernels/test_gpu.py 2>&1 | tee "$out/gpu_tests.log" || status=$?
    "$python" benchmarks/gpu_speed.py --data-dir "$CNN_MNIST_DATA" ${GPU_SPEED_ARGS:-} 2>&1 | tee "$out/gpu_speed.log" || status=$?
    tail -n 1 "$out/gpu_speed.log" > "$out/gpu_speed.json"
    exit $status
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh prepare | run [OUT]" >&2
    exit 2
    ;;
esac
