# The course kit: eight stages from a blocking echo server to a reactor framework.
#
#   make                         build every stage present (and the load generator)
#   make test                    every stage's tests + the capability matrix; ends `N passed, N failed`
#   make tour                    build, then show each stage at work (under a minute)
#   make matrix                  measure the capability matrix, print it as markdown
#   make bench                   the benchmark (tests/bench/README.md)
#   make bench-deps              install the optional benchmark peers (libevent, gnuplot)
#   make bugs                    every stage's bug gallery: each bugs/*.patch must fail its tests
#   make coverage                every stage's LAB regions: lines its tests run (gcov)
#   make fuzz                    every stage's libFuzzer targets, FUZZ_SECS (default 60) s each (needs clang)
#   make valgrind                08's echo, kv_server, http_server, heartbeat_server under valgrind for a short load (tests/valgrind.sh)
#   make lab STAGE=04 OUT=dir    starter code: stage 04 with its LAB regions cut out (LABS="a b": only those)
#   make grade STAGE=04 DIR=dir  run stage 04's tests on a student's folder: `Score: N/M`
#   make handout STAGE=04 OUT=lab04.tar.gz   a student's handout: the starter, the tests it needs, LAB.md,
#                                `make test`/`make grade` inside (LABS="a b"; BUG=name: one gallery bug to find)
#   make new NAME=x DIR=path     a new server project on 08's library, standalone (08_framework/template/)
#   make SAN=address,undefined   sanitized builds, in each stage's build-address-undefined/
#   make test SAN=thread         the tests against the ThreadSanitizer builds
#   make CC=clang                any C11 compiler
#   make clean

STAGES := $(patsubst %/Makefile,%,$(sort $(wildcard [0-9][0-9]_*/Makefile)))
SUBDIRS := $(STAGES) $(if $(wildcard tests/bench/Makefile),tests/bench)

all: $(SUBDIRS)

# Each stage is built by its own Makefile; SAN and CC given here reach them
# through MAKEFLAGS.
$(SUBDIRS):
	$(MAKE) -C $@

test: all
	SAN='$(SAN)' tests/run

tour: all
	SAN='$(SAN)' tests/tour

matrix: all
	SAN='$(SAN)' python3 tests/lib/matrix.py measure

# The benchmark measures the normal build, whatever SAN says.
bench:
	$(MAKE) SAN= all
	tests/bench/run.sh

bench-deps:
	tests/bench/deps.sh

# Every stage's patches in one pool (tests/bugs STAGE STAGE...); the last lines name every
# missed bug (a CI log is often read from its end).
bugs:
	@log=$$(mktemp); st=0; \
	    { tests/bugs $$(for d in $(STAGES); do [ ! -d $$d/bugs ] || echo $$d; done) || touch $$log.failed; } | tee $$log; \
	    echo "== galleries: $$(grep -c '^caught' $$log) caught, $$(grep -c '^MISSED' $$log) missed"; \
	    grep '^MISSED' $$log; [ ! -e $$log.failed ] || st=1; rm -f $$log $$log.failed; exit $$st

coverage:
	@st=0; for d in $(STAGES); do tests/coverage $$d || st=1; done; exit $$st

# Stages with fuzz targets (06_codecs, 08_framework's codecs) have a `fuzz` target of their own.
fuzz:
	@st=0; for d in $(STAGES); do grep -q '^fuzz:' $$d/Makefile || continue; $(MAKE) -C $$d fuzz || st=1; done; exit $$st

# The normal build of 08 (valgrind and the sanitizers do not mix): tests/valgrind.sh builds it.
valgrind:
	tests/valgrind.sh

lab:
	@[ -z "$(BUG)" ] || { echo 'make lab: BUG= is not supported (nothing was made); a handout with one gallery bug in it: make handout STAGE=$(STAGE) BUG=$(BUG) OUT=file.tar.gz' >&2; exit 2; }
	@[ -n "$(STAGE)" ] && [ -n "$(OUT)" ] || { echo 'usage: make lab STAGE=04 OUT=dir [LABS="name ..."]' >&2; exit 2; }
	tests/lab $(STAGE) $(OUT) $(LABS)

grade:
	@[ -n "$(STAGE)" ] && [ -n "$(DIR)" ] || { echo 'usage: make grade STAGE=04 DIR=dir' >&2; exit 2; }
	tests/grade $(STAGE) $(DIR)

# A tarball a student unpacks, builds and tests alone (tests/lib/handout.py; --help says what is in it).
handout:
	@[ -n "$(STAGE)" ] && [ -n "$(OUT)" ] || { echo 'usage: make handout STAGE=04 OUT=lab04.tar.gz [LABS="name ..."] [BUG=name]' >&2; exit 2; }
	tests/handout '$(STAGE)' '$(OUT)' --labs '$(LABS)' --bug '$(BUG)'

# DIR is relative to where make was typed (here), not to 08_framework.
new:
	@[ -n "$(NAME)" ] && [ -n "$(DIR)" ] || { echo 'usage: make new NAME=myserver DIR=path' >&2; exit 2; }
	$(MAKE) -s -C 08_framework new NAME='$(NAME)' DIR='$(abspath $(DIR))'

clean:
	for d in $(SUBDIRS); do $(MAKE) -C $$d clean || exit 1; done
	rm -rf tests/.out

.PHONY: all test tour matrix bench bench-deps bugs coverage fuzz valgrind lab grade handout new clean $(SUBDIRS)
