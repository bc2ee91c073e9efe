#!/usr/bin/env bash
# On a bare GPU machine with PyTorch (the device tool's): install torch-fidelity from a carried wheel, unpack MNIST
# from carried .gz files, then take every GPU figure in one run (benchmarks/gpu_figures.py). Prepare here with:
#   mkdir -p .gpu/whl .gpu/mnist; pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_28_x86_64 -d .gpu/whl torch-fidelity
#   for f in ../shared/data/MNIST/raw/*-ubyte; do gzip -c $f > .gpu/mnist/$(basename $f).gz; done
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/data/MNIST/raw
for f in .gpu/mnist/*.gz; do gunzip -c "$f" > "/tmp/data/MNIST/raw/$(basename "$f" .gz)"; done
export AEBENCH_DATA=/tmp/data AEBENCH_CACHE=/tmp/aebench-cache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 benchmarks/gpu_figures.py --out "${OUT:-/tmp/out}" --suite-timeout "${SUITE_TIMEOUT:-360}"
# stacked training on the GPU: three seeds of the MLP VAE in one stack against one seed (issue 16)
python3 benchmarks/bench_stacked.py --device cuda --rounds 2 --out "${OUT:-/tmp/out}/stacked-gpu.json"
# a whole search's worth in one stack: 9 members (3 trials x 3 seeds' worth of jobs) against one job
python3 benchmarks/bench_stacked.py --device cuda --rounds 2 --seeds 9 --out "${OUT:-/tmp/out}/stacked-gpu-9.json"
