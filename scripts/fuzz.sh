#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/<Reader>/, Sources/Fuzzing) under AddressSanitizer, one after
# the other, each for SECONDS (default 60) or RUNS inputs (default 1,000,000), whichever ends first.
#
#   scripts/fuzz.sh [SECONDS] [RUNS] [READER...]     e.g. scripts/fuzz.sh 600 1000000 NPY Suite
#
# Each target starts from its committed seeds (Tests/Fuzz/corpus/<entry>/) and the inputs that once
# crashed (Tests/Fuzz/regressions/<entry>/), copied to .build-Tests/Fuzz/corpus/ so the grown corpus is never
# committed. A crash, a leak, a timeout (10 s for one input) or running out of memory (2 GiB) stops
# that target, leaves the input in .build-fuzz/artifacts/ and makes the script fail; copy it to
# Tests/Fuzz/regressions/<entry>/ so the replay test (FuzzReplayTests) keeps it fixed. The summary line of
# each target (inputs run, seconds) goes to .build-fuzz/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"; runs="${2:-1000000}"; shift $(( $# > 2 ? 2 : $# ))
readers=("$@"); [ ${#readers[@]} -gt 0 ] || readers=(Safetensors NPY TorchLabels CIFAR Archive Suite)
entry() { case "$1" in Safetensors) echo safetensors;; NPY) echo npy;; TorchLabels) echo pt;; CIFAR) echo cifar;;
                       Archive) echo archive;; Suite) echo suite;; *) echo "unknown reader $1" >&2; exit 2;; esac; }

# --sanitize=fuzzer keeps SwiftPM from renaming main; the Swift flags must be ONE -sanitize= list.
export SAMBENCH_FUZZ=1
mkdir -p .build-fuzz/artifacts
for r in "${readers[@]}"; do
    echo "building Fuzz$r (log: .build-fuzz/build.log)"
    swift build -c debug --product "Fuzz$r" --scratch-path .build-fuzz \
        --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library \
        > .build-fuzz/build.log 2>&1 || { grep -v 'Cannot export local symbol' .build-fuzz/build.log | tail -40; exit 1; }
done
: > .build-fuzz/summary.txt
status=0
for r in "${readers[@]}"; do
    e=$(entry "$r")
    corpus=.build-Tests/Fuzz/corpus/$e
    mkdir -p "$corpus"
    cp Tests/Fuzz/corpus/"$e"/* "$corpus"/
    if [ -d Tests/Fuzz/regressions/"$e" ]; then cp Tests/Fuzz/regressions/"$e"/* "$corpus"/ 2>/dev/null || true; fi
    log=.build-fuzz/$r.log
    # TOMLKit (a dependency) leaks its error buffer on every parse (TOMLTable(string:) allocates
    # it and never frees it): leak detection is off for the suite parser only.
    leaks=1; [ "$r" = Suite ] && leaks=0
    echo "== Fuzz$r: $seconds s or $runs inputs"
    # Swift's backtracer would catch a trap before libFuzzer saves the input.
    if ASAN_OPTIONS=detect_leaks=$leaks SWIFT_BACKTRACE=enable=no ".build-fuzz/debug/Fuzz$r" -max_total_time="$seconds" -runs="$runs" \
           -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -detect_leaks=$leaks \
           -artifact_prefix=.build-fuzz/artifacts/"$r"- "$corpus" > "$log" 2>&1; then
        result=clean
    else
        result="FAILED (see $log and .build-fuzz/artifacts/)"; status=1
    fi
    done_runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || echo "$seconds")
    line="Fuzz$r: $done_runs inputs in ${took} s under ASan, $result ($(date -u +%Y-%m-%d))"
    echo "$line" | tee -a .build-fuzz/summary.txt
done
exit $status
