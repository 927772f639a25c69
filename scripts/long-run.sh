#!/usr/bin/env bash
# A suite that outlives one sitting (suites/paper-cpu.toml: about five hours on 2 cores), run in
# the background with its database, checkpoints, data and a copy of the binary kept outside the
# work tree, so that rebuilding or cleaning the checkout does not touch it. Run the same command
# at the start of every sitting: finished runs are skipped, interrupted ones resume from their
# last epoch. It runs at the lowest priority (nice 19, for its scheduling autogroup too) with one
# thread per job, so builds and tests beside it keep the cores they need.
#
#   bash scripts/long-run.sh [SUITE...] [sambench run options...]    # default: suites/paper-cpu.toml
#   tail -f ~/sambench-long/log.txt
#   ~/sambench-long/bin/sambench report --db ~/sambench-long/db/paper-cpu.sqlite
#
# Several suites run one after another in the one background job, all into the database of the
# first (db/NAME.sqlite), so that one report reads them together: the noise sweep beside paper-cpu is
#   bash scripts/long-run.sh suites/paper-cpu.toml suites/paper-cpu-sweep-80.toml suites/paper-cpu-sweep.toml
#
# SAMBENCH_LONG names another folder (default ~/sambench-long). The CIFAR-10 files are built
# from ../shared/datasets when the folder has none (or pass --data-dir). The binary is copied
# from .build/release (build it first) when the folder has none; delete bin/ to take a newer one.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${SAMBENCH_LONG:-$HOME/sambench-long}"
suites=()
while [ $# -gt 0 ] && [[ "$1" == *.toml ]]; do suites+=("$1"); shift; done
[ ${#suites[@]} -gt 0 ] || suites=(suites/paper-cpu.toml)
suite_name() { sed -n 's/^name *= *"\(.*\)"$/\1/p' "$1" | head -1; }
names=()
for suite in "${suites[@]}"; do
    [ -f "$suite" ] || { echo "error: no suite file $suite" >&2; exit 1; }
    names+=("$(suite_name "$suite")")
done
db="db/${names[0]}.sqlite"
mkdir -p "$dir/bin" "$dir/db" "$dir/suites"
if [ ! -x "$dir/bin/sambench" ]; then
    [ -x .build/release/sambench ] || { echo "error: build sambench first (swift build -c release)" >&2; exit 1; }
    cp .build/release/sambench "$dir/bin/sambench"
fi
if [ ! -f "$dir/data/cifar-10-batches-bin/test_batch.bin" ]; then
    python=${SAMBENCH_PYTHON:-.build-venv/bin/python}
    "$python" ../shared/datasets/cifar10/build.py "$dir/data"
fi
for i in "${!suites[@]}"; do cp "${suites[$i]}" "$dir/suites/${names[$i]}.toml"; done
cd "$dir"
# One job runs the suites in order; a suite that fails (an interrupted run, a failed expectation)
# does not keep the next from running.
run_all() {
    for name in "${names[@]}"; do
        ./bin/sambench run "suites/$name.toml" --data-dir data --db "$db" \
            --checkpoints checkpoints --jobs 2 --threads 1 "$@" || echo "suite $name: exit status $?"
    done
}
export -f run_all
export db
names_list="${names[*]}"
# setsid makes a new scheduling autogroup, and nice works only within one: without the autogroup's
# own nice the suite would take half the machine from the builds and tests beside it.
setsid nohup nice -n 19 bash -c 'echo 19 > /proc/self/autogroup 2>/dev/null || true; names=($0); run_all "$@"' "$names_list" "$@" >> log.txt 2>&1 < /dev/null &
echo "suites ${names[*]} running in the background (pid $!): $dir/log.txt, database $dir/$db"
