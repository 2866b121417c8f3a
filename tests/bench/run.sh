#!/bin/sh
# run.sh: `make bench` calls this: builds the load generator and the peers, then runs run.py.
# All the work (and every knob: BENCH_REPEAT, BENCH_SECS, ...) is in run.py; see README.md.
set -e
here=$(dirname "$0")
make -s -C "$here" SAN= >&2
exec python3 "$here/run.py" "$@"
