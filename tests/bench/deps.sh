#!/bin/sh
# deps.sh: `make bench-deps`: installs what the benchmark can use but does not need:
# libevent-dev (to build the libevent peer) and gnuplot-nox (to draw the SVG plots).
#
# Both are optional: without them `make bench` still measures every stage, skips the
# libevent column and writes no plots, and says so. Needs root (or sudo) and apt-get.
set -e
if ! command -v apt-get >/dev/null 2>&1; then
    echo "bench-deps: no apt-get here; install libevent's headers and gnuplot with your" \
         "package manager (both optional)" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "bench-deps: needs root to install packages (both optional)" >&2
        exit 1
    fi
fi
${SUDO:-} apt-get update
${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y libevent-dev gnuplot-nox
