#!/bin/sh
# deps.sh: `make bench-deps`: installs what the benchmark and 08's tests can use but do not
# need: libevent-dev (to build the libevent peer), gnuplot-nox (to draw the SVG plots),
# redis-server (the yardstick of 07_chat's broadcast benchmark and of 08's kv_server, and the
# Redis 08's gateway talks to), redis-tools (redis-cli, redis-benchmark), wrk and curl (08's
# HTTP examples), nginx-light (http_server's peer) and netcat-openbsd (nc).
#
# All are optional: without them `make bench` still measures every stage, skips the
# libevent and redis columns and writes no plots, and says so. Needs root (or sudo) and apt-get.
set -e
if ! command -v apt-get >/dev/null 2>&1; then
    echo "bench-deps: no apt-get here; install libevent's headers, gnuplot, redis (server and" \
         "tools), wrk, curl, nginx and netcat with your package manager (all optional)" >&2
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
# Debian starts redis-server and nginx as system services when it installs them; nothing
# here uses those: the benchmarks and tests start their own, on loopback ports.
${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    libevent-dev gnuplot-nox redis-server redis-tools wrk curl nginx-light netcat-openbsd
