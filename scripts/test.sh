#!/usr/bin/env bash
# The second command: the same set-up as scripts/quickstart.sh, then the tests (release mode:
# the plain-Swift reference ops are slow in debug builds). Also installs chromium (the HTML
# report's test renders the page in it) and, where PyPI is reachable, a Python venv in
# .build-venv with numpy, safetensors, pillow and PyTorch's CPU wheel for the interoperability
# tests, and builds the real CIFAR-10 from ../shared/datasets into .build-data when it is there.
# What cannot be set up is said, and those tests skip. .ci/run calls this.
#
#   bash scripts/test.sh [swift test options...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

install_packages chromium python3-venv
check_swift

if [ -x .build-venv/bin/python ] || python3 -m venv .build-venv >/dev/null 2>&1; then
    if .build-venv/bin/pip install -q numpy safetensors pillow >/dev/null 2>&1; then
        export SAMBENCH_PYTHON="$PWD/.build-venv/bin/python"
        # The local CPU wheel; a plain `torch` would pull a CUDA build of several GB.
        .build-venv/bin/pip install -q "torch==2.13.0+cpu" >/dev/null 2>&1 ||
            echo "note: torch==2.13.0+cpu not installable; the PyTorch interoperability tests will skip"
    else
        echo "note: numpy/safetensors not installable; the interoperability and real-data tests will skip"
    fi
fi
if [ -n "${SAMBENCH_PYTHON:-}" ] && [ -f ../shared/datasets/cifar10/build.py ]; then
    if [ ! -f .build-data/cifar-10-batches-bin/test_batch.bin ]; then
        "$SAMBENCH_PYTHON" ../shared/datasets/cifar10/build.py .build-data >/dev/null
    fi
    export SAMBENCH_TEST_CIFAR10="$PWD/.build-data"
else
    echo "note: ../shared/datasets not found (or no Python); the real CIFAR-10 test will skip"
fi

# (`swift build --build-tests` cannot split the build from the tests here: a release build is
# testable only under `swift test`. Its "Build complete!" line gives the build's share.)
setup_seconds=$SECONDS
swift test -c release "$@"
echo "test.sh: set-up ${setup_seconds} s, test build and tests $((SECONDS - setup_seconds)) s"
