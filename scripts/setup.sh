# Shared set-up for scripts/quickstart.sh and scripts/test.sh (sourced, not run): the system
# packages sambench needs (after apt-get update; as root, or through sudo), a Swift 6 check,
# and the release build.

# The Debian/Ubuntu packages: oneDNN, OpenBLAS, zlib, SQLite (and its client, to look into the
# results), cairo, libpng and the DejaVu fonts for the charts.
SAMBENCH_PACKAGES="libdnnl-dev libopenblas-dev zlib1g-dev libssl-dev libsqlite3-dev sqlite3 libcairo2-dev libpng-dev fonts-dejavu-core"

# Runs a command as root: directly when root already (containers, CI), else through sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: installing packages needs root: run this as root, or install sudo" >&2
        return 1
    fi
}

# Installs the packages named (beyond SAMBENCH_PACKAGES) that are missing; apt-get update first.
install_packages() {
    local missing=""
    for p in $SAMBENCH_PACKAGES "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -z "$missing" ]; then
        echo "system packages: all present"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: no apt-get here; install the equivalents of:$missing (see README.md)" >&2
        return 1
    fi
    echo "system packages: installing$missing"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

# Swift 6 or later must be on PATH (README.md: Install says how to get it).
check_swift() {
    if ! command -v swift >/dev/null 2>&1; then
        echo "error: no swift on PATH. Install Swift 6 (README.md, Install), e.g. with swiftly:" >&2
        echo '  curl -O "https://download.swift.org/swiftly/linux/swiftly-$(uname -m).tar.gz" && tar zxf "swiftly-$(uname -m).tar.gz" && ./swiftly init' >&2
        return 1
    fi
    local major
    major=$(swift --version 2>/dev/null | sed -n 's/.*Swift version \([0-9]*\).*/\1/p' | head -1)
    if [ -z "$major" ] || [ "$major" -lt 6 ]; then
        echo "error: sambench needs Swift 6 or later; this is: $(swift --version 2>&1 | head -1)" >&2
        return 1
    fi
}

build_release() {
    # CI has just built everything with `swift test -c release` (testable, so a `swift build -c
    # release` after it compiles every module again, minutes on 2 cores): it reuses that binary.
    if [ -n "${SAMBENCH_REUSE_TEST_BUILD:-}" ] && [ -x .build/release/sambench ]; then
        echo "using the .build/release/sambench that swift test -c release built (SAMBENCH_REUSE_TEST_BUILD)"
        return
    fi
    echo "building sambench (release; about three minutes the first time on 2 cores)"
    swift build -c release
}
