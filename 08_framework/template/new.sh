#!/bin/sh
# new.sh NAME DIR: a standalone server project named NAME in DIR, from this folder (the
# template) and a copy of the library (../lib, without its unit tests). In DIR, `make` builds
# ./NAME and `make test` tests it, with nothing from the kit: no path in DIR leads back here.
#
#   make -C 08_framework new NAME=myserver DIR=/path/to/myserver   (the kit's Makefile rules)
#   make new NAME=myserver DIR=/path/to/myserver                  (from the kit's root)
#
# Refuses (exit 2, nothing written) when an argument is missing, NAME is not a C identifier
# (it names the program, its source file and its log lines) or is a name the project's own
# files or make targets use, or DIR exists and is not an empty folder.
set -eu

usage() {
    echo "usage: new.sh NAME DIR   (NAME: a C identifier, DIR: a new or empty folder)" >&2
    echo "       make new NAME=myserver DIR=../myserver" >&2
    exit 2
}
refuse() {
    echo "new.sh: $*" >&2
    exit 2
}

[ $# -eq 2 ] || usage
name=$1
dir=$2
[ -n "$name" ] && [ -n "$dir" ] || usage
case $name in
[!A-Za-z_]* | *[!A-Za-z0-9_]*)
    refuse "NAME '$name' is not a C identifier (letters, digits and '_', not starting with a digit)" ;;
# The project's other files and its make targets: a program by one of these names would
# overwrite them or be a target of its own.
lib | all | test | clean | build | Makefile | README | test_server)
    refuse "NAME '$name' is taken by the project's own files or make targets: choose another" ;;
esac
if [ -e "$dir" ] || [ -L "$dir" ]; then
    [ -d "$dir" ] || refuse "DIR '$dir' exists and is not a folder"
    [ -z "$(ls -A "$dir")" ] || refuse "DIR '$dir' exists and is not empty: give a new or empty folder"
fi

here=$(cd "$(dirname "$0")" && pwd)
lib=$here/../lib
[ -f "$lib/rx.h" ] || refuse "no library next to the template ($lib/rx.h)"

mkdir -p "$dir/lib"
# The library: every source and header but the unit tests (lib/*_test.c), whose checks
# belong to the kit.
for f in "$lib"/*.c "$lib"/*.h; do
    case $f in
    *_test.c) continue ;;
    esac
    cp "$f" "$dir/lib/"
done
# The template, with its program's name (the word "template") made NAME.
for f in Makefile README.md test_server.py template.c; do
    to=$f
    [ "$f" = template.c ] && to=$name.c
    sed "s/\\<template\\>/$name/g" "$here/$f" >"$dir/$to"
done
chmod +x "$dir/test_server.py"
# Where the library copy came from, for its next update (README.md, "Updating the library").
rev=$(git -C "$here" rev-parse --short HEAD 2>/dev/null) || rev=unknown
if [ "$rev" != unknown ] && [ -n "$(git -C "$lib" status --porcelain -- . 2>/dev/null)" ]; then
    rev="$rev with uncommitted changes to lib/"
fi
printf 'rx library copied from the course kit, commit %s, on %s\n' "$rev" "$(date -u +%Y-%m-%d)" >"$dir/lib/VERSION"
echo "new.sh: $name in $dir: cd $dir && make && make test"
