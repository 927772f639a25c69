#!/usr/bin/env bash
# A suite that outlives one sitting (suites/paper-cpu.toml: about five hours on 2 cores), run in
# the background with its database, checkpoints, data and a copy of the binary kept outside the
# work tree, so that rebuilding or cleaning the checkout does not touch it. Run the same command
# at the start of every sitting: finished runs are skipped, interrupted ones resume from their
# last epoch. It runs at the lowest priority (nice 19) with one thread per job, so builds and
# tests beside it keep the cores they need.
#
#   bash scripts/long-run.sh [SUITE] [sambench run options...]    # default: suites/paper-cpu.toml
#   tail -f ~/sambench-long/log.txt
#   ~/sambench-long/bin/sambench report --db ~/sambench-long/db/paper-cpu.sqlite
#
# SAMBENCH_LONG names another folder (default ~/sambench-long). The CIFAR-10 files are built
# from ../shared/datasets when the folder has none (or pass --data-dir). The binary is copied
# from .build/release (build it first) when the folder has none; delete bin/ to take a newer one.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${SAMBENCH_LONG:-$HOME/sambench-long}"
suite="${1:-suites/paper-cpu.toml}"
[ $# -gt 0 ] && shift
name=$(sed -n 's/^name *= *"\(.*\)"$/\1/p' "$suite" | head -1)
mkdir -p "$dir/bin" "$dir/db" "$dir/suites"
if [ ! -x "$dir/bin/sambench" ]; then
    [ -x .build/release/sambench ] || { echo "error: build sambench first (swift build -c release)" >&2; exit 1; }
    cp .build/release/sambench "$dir/bin/sambench"
fi
if [ ! -f "$dir/data/cifar-10-batches-bin/test_batch.bin" ]; then
    python=${SAMBENCH_PYTHON:-.build-venv/bin/python}
    "$python" ../shared/datasets/cifar10/build.py "$dir/data"
fi
cp "$suite" "$dir/suites/$name.toml"
cd "$dir"
setsid nohup nice -n 19 ./bin/sambench run "suites/$name.toml" --data-dir data --db "db/$name.sqlite" \
    --checkpoints checkpoints --jobs 2 --threads 1 "$@" >> log.txt 2>&1 < /dev/null &
echo "suite $name running in the background (pid $!): $dir/log.txt, database $dir/db/$name.sqlite"
