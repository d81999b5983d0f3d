#!/usr/bin/env bash
# zoff quick start on Debian: installs what is missing, builds, and runs.
#   ./build.sh run    install deps, build Release, run the main job (zoff train's built-in demo)
#   ./build.sh test   install deps, build Release + ASan/UBSan + TSan, run the whole test suite
#   ./build.sh build  install deps and build Release only
# Environment: JOBS (parallel build jobs, default: all cores), ZOFF_CUDA (AUTO|ON|OFF).
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-run}
jobs=${JOBS:-$(nproc)}

# Debian packages zoff builds against (the CUDA toolkit is optional and found in
# /usr/local/cuda or on PATH; without it the CUDA backend is left out).
packages=(build-essential cmake pkg-config liburing-dev libhwloc-dev libopenblas-dev
          libcjson-dev libxxhash-dev libpcre2-dev
          libutf8proc-dev libopenmpi-dev openmpi-bin)
[ "$mode" = test ] && packages+=(fio)

install_missing() {
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing: ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# configure_and_build DIR [cmake args...]
configure_and_build() {
    local dir=$1
    shift
    echo "==> building $dir ($*)"
    cmake -S . -B "$dir" -DZOFF_CUDA="${ZOFF_CUDA:-AUTO}" "$@" >"$dir.configure.log" 2>&1 ||
        { cat "$dir.configure.log"; exit 1; }
    cmake --build "$dir" -j "$jobs" >"$dir.build.log" 2>&1 ||
        { tail -n 60 "$dir.build.log"; exit 1; }
}

mkdir -p build
install_missing

case "$mode" in
build)
    configure_and_build build/release -DCMAKE_BUILD_TYPE=Release
    ;;
run)
    configure_and_build build/release -DCMAKE_BUILD_TYPE=Release
    echo "==> zoff train (built-in demo: a small GPT on GPL-3 with byte tokens)"
    build/release/cli/zoff train --out build/zoff_out --overwrite
    ;;
test)
    status=0
    configure_and_build build/release -DCMAKE_BUILD_TYPE=Release -DZOFF_WERROR=ON -DZOFF_MPI=ON
    echo "==> tests: release"
    (cd build/release && ctest --output-on-failure -j "$jobs") || status=1

    # Sanitizer builds leave CUDA out: its tests would only skip without a GPU.
    configure_and_build build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DZOFF_CUDA=OFF -DZOFF_MPI=ON \
        -DZOFF_SANITIZE=address,undefined
    echo "==> tests: ASan+UBSan"
    (cd build/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j "$jobs") ||
        status=1

    configure_and_build build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DZOFF_CUDA=OFF \
        -DZOFF_SANITIZE=thread
    echo "==> tests: TSan (concurrent tests)"
    # TSan's shadow memory layout needs the kernel's full mmap randomisation turned off.
    (cd build/tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        setarch "$(uname -m)" -R ctest --output-on-failure -j "$jobs" -L concurrent) || status=1

    if [ $status -ne 0 ]; then
        echo "==> FAILED: see the test output above"
        exit 1
    fi
    echo "==> all test configurations passed"
    ;;
*)
    echo "usage: $0 run|test|build" >&2
    exit 2
    ;;
esac
