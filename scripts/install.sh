#!/usr/bin/env bash
# Installs ragbus into .venv (`bash scripts/install.sh`, or `bash scripts/install.sh test` with the test
# extras). llama-cpp-python compiles from source here, and a build that loads can still crash on its first
# prompt on some CPUs, so the build is checked on the packaged model and rebuilt with the next flags if it
# crashes: the machine's own CPU first (fastest, and what a Raspberry Pi needs), then generic x86-64 with
# AVX2 (a native build on an AMX Xeon segfaults), then plain x86-64 without AVX. CMAKE_ARGS, if set, is
# tried first.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
target="."
[ -n "$extras" ] && target=".[$extras]"

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# torch first, pinned, so nothing else can pull a CUDA build
.venv/bin/pip install --quiet "torch==2.13.0"

flags=()
[ -n "${CMAKE_ARGS:-}" ] && flags+=("$CMAKE_ARGS")
flags+=(
  "-DGGML_NATIVE=ON"
  "-DGGML_NATIVE=OFF"
  "-DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF"
)
first=1
for cmake_args in "${flags[@]}"; do
  if [ "$first" = 1 ]; then
    echo "installing ragbus (llama-cpp-python built with $cmake_args; about 6 minutes on 2 cores the first time)"
    CMAKE_ARGS="$cmake_args" .venv/bin/pip install --quiet -e "$target"
    first=0
  else
    echo "rebuilding llama-cpp-python with $cmake_args"
    # pip's wheel cache does not key on CMAKE_ARGS: without --no-cache-dir it would reinstall the crashing build
    version="$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
    CMAKE_ARGS="$cmake_args" .venv/bin/pip install --quiet --no-cache-dir --force-reinstall --no-deps \
      "llama-cpp-python==$version"
  fi
  rc=0
  .venv/bin/python scripts/llama_check.py || rc=$?
  [ "$rc" = 0 ] && exit 0
  echo "llama-cpp-python built with $cmake_args does not run on this machine: exit code $rc" \
    "(139 is a segmentation fault, 132 an illegal instruction)" >&2
done
echo "no llama-cpp-python build ran here; see the errors above" >&2
exit 1
