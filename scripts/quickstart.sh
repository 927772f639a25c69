#!/usr/bin/env bash
# The first command on a fresh Debian 12 / Ubuntu machine with Swift 6: installs the system
# packages (as root or with sudo, after apt-get update), builds sambench in release mode, runs
# the main job on a suite (default: suites/quick.toml, synthetic data, about three minutes on 2
# cores) and reports it: tables here, charts in results/charts, the page results/report.html.
#
#   bash scripts/quickstart.sh [SUITE] [sambench run options...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

suite="${1:-suites/quick.toml}"
[ $# -gt 0 ] && shift
install_packages
check_swift
build_release
.build/release/sambench run "$suite" "$@"
name=$(sed -n 's/^name *= *"\(.*\)"$/\1/p' "$suite" | head -1)
.build/release/sambench report ${name:+--suite "$name"}
.build/release/sambench report ${name:+--suite "$name"} --format html --out results/report.html
echo "open results/report.html in a browser: the answer, the tables and every chart in one file"
