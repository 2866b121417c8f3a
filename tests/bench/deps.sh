#!/bin/sh
# deps.sh: `make bench-deps`: installs what the benchmark can use but does not need:
# libevent-dev (to build the libevent peer), gnuplot-nox (to draw the SVG plots) and
# redis-server (the yardstick of 07_chat's broadcast benchmark, stage07.py).
#
# All are optional: without them `make bench` still measures every stage, skips the
# libevent and redis columns and writes no plots, and says so. Needs root (or sudo) and apt-get.
set -e
if ! command -v apt-get >/dev/null 2>&1; then
    echo "bench-deps: no apt-get here; install libevent's headers, gnuplot and redis-server" \
         "with your package manager (all optional)" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "bench-deps: needs root to install packages (all optional)" >&2
        exit 1
    fi
fi
${SUDO:-} apt-get update
${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y libevent-dev gnuplot-nox redis-server
