#!/usr/bin/env python3
"""tests/handout STAGE OUT.tar.gz [--labs "a b"] [--bug NAME]: a lab handout, one tarball.

    make handout STAGE=04 OUT=~/lab04.tar.gz                 every LAB region cut out
    make handout STAGE=04 LABS="et_drain" OUT=lab04.tar.gz only those cut; the rest written
    make handout STAGE=04 BUG=et-reads-once OUT=bug04.tar.gz the whole stage, one gallery bug in it

OUT unpacks to one folder named after it (lab04.tar.gz -> lab04/) that a student builds and
tests on its own, with nothing else of the kit:

    lab04/Makefile          make, make test [LAB=name], make grade [LAB=name], make clean
    lab04/LAB.md            per lab: the task, where the TODO is, its tests and weight, hints
    lab04/04_epoll/         the stage as `tests/lab` cuts it (LAB TODO comments and stubs), with
                            its notes (README.md) rewritten: no cut code, no pointers to what
                            the handout lacks (bugs/, the benchmark, other stages' folders)
    lab04/tests/run         the runner; tests/lib/: harness.bash and what the stage's tests
                            load, import or compile (found from the files themselves),
                            grade.py (for `make grade`) and handout_run.py

The layout is the kit's (the stage folder beside tests/), so the test files are shipped
unchanged. Left out: bugs/, every other stage, tests/bench and the stage Makefile's targets
that need them (diff, bugs, coverage, bench), anything built, patch and editor leftovers.
Before writing OUT the tool checks that no line of a cut region's reference code (one the
starter does not hold anyway) appears in any file of the handout; it stops with exit 1 if
one does.

--bug NAME (a patch of STAGE/bugs/, with or without .patch): the full stage, no region cut,
the LAB markers taken out, that patch applied, every C comment that touches a line the patch
adds removed, and nothing that names it: no bugs/, no patch header, no gallery table or bug
list in the notes. LAB.md then says that one plausible bug is in this server and the tests
show its symptom. `make grade` in it fails the bug's Caught-by tests.

OUT must end in .tar.gz or .tgz; its folder is created; an existing OUT is refused (remove
it first). Exit status: 0 made, 1 a check failed (nothing written), 2 usage error (a bad
stage, lab or bug name).
"""

import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
KIT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import grade  # noqa: E402  (labs.txt and test names, read as the grader reads them)

# The markers, as tests/lab reads them.
BEGIN = re.compile(r"^(\s*)//\s*LAB BEGIN ([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$")
END = re.compile(r"^\s*//\s*LAB END\b")
STUB = re.compile(r"^(\s*)//\s*LAB STUB:(?: (.*))?$")
TODO = re.compile(r"^(\s*)//\s*LAB TODO ([A-Za-z_][A-Za-z0-9_]*):")
HINT = re.compile(r"^(\s*)//\s*\(write this part; then run the tests: .*\)\s*$")
SKIP_DIRS = {"bugs", ".git", "__pycache__"}
SKIP_FILES = re.compile(r"(\.o|\.d|\.gcda|\.gcno|\.gcov|\.orig|\.rej|\.bak|~|\.sw[op]|\.pyc)$|^#.*#$|^core(\.\d+)?$")
# A reference line shorter than this (`}`, `break;`, `return 0;`) gives nothing away.
LEAK_MIN = 12
WRAP = 95


class Usage(Exception):
    pass


class CheckFailed(Exception):
    pass


def norm(s):
    return " ".join(s.split())


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def is_text(path):
    try:
        with open(path, "rb") as f:
            return b"\0" not in f.read(8192)
    except OSError:
        return False


def walk_files(top):
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for f in sorted(filenames):
            yield os.path.join(dirpath, f)


# ---------------------------------------------------------------- the stage's LAB regions

def c_sources(sdir):
    """STAGE's .c/.h files (relative paths), bugs/ and build folders left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(sdir):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("build-"))
        for f in sorted(filenames):
            if f.endswith((".c", ".h")) and not SKIP_FILES.search(f):
                out.append(os.path.relpath(os.path.join(dirpath, f), sdir))
    return out


FUNC_DEF = re.compile(r"^(?:[A-Za-z_][\w\s\*]*?[\s\*])?([A-Za-z_]\w*)\s*\([^;]*$")
NOT_FUNCS = {"if", "while", "for", "switch", "return", "sizeof", "static_assert", "_Static_assert"}


def def_name(line):
    """The function a column-0 line defines (`static int conn_flush(struct conn *c)`), else None."""
    if not line[:1].isalpha() and line[:1] != "_":
        return None
    if line.startswith(("typedef", "struct", "enum", "union", "#")) and "(" not in line:
        return None
    m = FUNC_DEF.match(line.rstrip())
    if m and m.group(1) not in NOT_FUNCS and not line.rstrip().endswith((";", ",")):
        return m.group(1)
    return None


def regions(sdir):
    """Every LAB region of the stage: dicts with name, file, task, body, stub, where."""
    found = []
    for rel in c_sources(sdir):
        lines = read(os.path.join(sdir, rel)).splitlines()
        inside = None
        for i, line in enumerate(lines):
            if inside is None:
                m = BEGIN.match(line)
                if m:
                    enclosing = None
                    for back in range(i - 1, -1, -1):
                        enclosing = def_name(lines[back])
                        if enclosing or lines[back].startswith("}"):
                            break
                    inside = {"name": m.group(2), "file": rel, "task": m.group(3).strip(),
                              "body": [], "stub": [], "defines": [], "enclosing": enclosing}
                continue
            if END.match(line):
                found.append(inside)
                inside = None
                continue
            s = STUB.match(line)
            if s:
                stub = s.group(2) or ""
                inside["stub"].append(stub)
                d = def_name(stub)
                if d and d not in inside["defines"]:
                    inside["defines"].append(d)
                continue
            inside["body"].append(line)
            d = def_name(line)
            if d and d not in inside["defines"]:
                inside["defines"].append(d)
    return found


# ---------------------------------------------------------------- what the tests need

REF_PATH = re.compile(r"(?<![\w.-])(tests/[\w.-]+(?:/[\w.-]+)*|\d\d_[a-z_]+/[\w.-]+(?:/[\w.-]+)*)")
PY_JOIN = re.compile(r"os\.path\.join\(\s*ROOT\s*,((?:\s*\"[^\"]+\"\s*,?)+)\)")
PY_IMPORT = re.compile(r"^\s*(?:from\s+([A-Za-z_]\w*)\s+import|import\s+([A-Za-z_][\w, ]*))", re.M)


def harness_files(stage):
    """The kit files (relative to the kit) the stage's tests and the handout's tools use,
    outside the stage folder: found by following what each file names (`tests/lib/x.py`,
    `os.path.join(ROOT, "tests", ...)`) and imports, starting from the stage's test files."""
    sdir = os.path.join(KIT, stage)
    start = [os.path.join(stage, f) for f in sorted(os.listdir(sdir)) if re.match(r"^test.*\.bats$", f)]
    start += ["tests/run", "tests/lib/harness.bash", "tests/lib/grade.py", "tests/lib/handout_run.py"]
    need, todo = set(), list(start)
    while todo:
        rel = todo.pop()
        path = os.path.join(KIT, rel)
        if not os.path.isfile(path) or not is_text(path):
            continue
        text = read(path)
        refs = set(m.group(1) for m in REF_PATH.finditer(text))
        for m in PY_JOIN.finditer(text):
            refs.add("/".join(re.findall(r"\"([^\"]+)\"", m.group(1))))
        if rel.endswith(".py"):
            for m in PY_IMPORT.finditer(text):
                for mod in (m.group(1) or m.group(2)).split(","):
                    mod = mod.strip().split(" ")[0]
                    if mod:
                        refs.add(os.path.join(os.path.dirname(rel), mod + ".py"))
        for r in refs:
            r = os.path.normpath(r.rstrip("."))
            if r.startswith(stage + "/") or r in need:
                continue
            if r.startswith("tests/bench") or r.startswith("tests/.out"):
                continue
            # The grader copies the kit's root Makefile when there is one (08's template test
            # runs `make -C "$KIT_ROOT" new`); a handout has none, and following it would ship
            # every tool the root Makefile names (tests/bugs among them).
            if r == "Makefile" and rel == "tests/lib/grade.py":
                continue
            if os.path.isfile(os.path.join(KIT, r)):
                # Another stage: only a test file the stage's own tests run ("$KIT_ROOT/07_chat/
                # test.bats" in 08's test_chat.bats), never its sources; a mention in a comment
                # of the harness (`tests/run 03_poll/test.bats`) is not a need.
                if re.match(r"^\d\d_", r) and not (rel.startswith(stage + "/") and r.endswith(".bats")
                                                    and re.search(r"KIT_ROOT\}?/" + re.escape(r), text)):
                    continue
                need.add(r)
                todo.append(r)
    return sorted(r for r in need | set(start[len(start) - 4:]) if not r.startswith(stage + "/"))


# ---------------------------------------------------------------- the stage Makefile

def clean_makefile(text, exists):
    """The stage Makefile without the rules that need what the handout lacks (a `../` path
    that EXISTS(path) denies: tests/bugs, tests/stagediff, tests/bench...), their comment
    blocks, their `make X` lines in the header and their .PHONY names. Returns (text, removed)."""
    lines = text.splitlines()
    removed = set()
    rule = re.compile(r"^([A-Za-z_][\w.-]*(?:\s+[A-Za-z_][\w.-]*)*)\s*:(?![=:])")
    i, keep = 0, [True] * len(lines)
    while i < len(lines):
        m = rule.match(lines[i])
        if not m or lines[i].startswith("."):
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].startswith("\t"):
            j += 1
        recipe = "\n".join(lines[i:j])
        bad = [p for p in re.findall(r"\.\./([\w.-]+(?:/[\w.-]+)*)", recipe) if not exists(p)]
        if bad:
            removed.update(m.group(1).split())
            for k in range(i, j):
                keep[k] = False
            k = i - 1
            while k >= 0 and lines[k].startswith("#"):
                keep[k] = False
                k -= 1
        i = j
    out = [l for l, k in zip(lines, keep) if k]
    res, skip_indent = [], None
    for l in out:
        m = re.match(r"^#(\s+)make\s+([\w-]+)\b", l)
        if m and m.group(2) in removed:
            skip_indent = len(m.group(1))
            continue
        if skip_indent is not None:
            c = re.match(r"^#(\s+)\S", l)
            if c and len(c.group(1)) > skip_indent + 4:
                continue
            skip_indent = None
        if l.startswith(".PHONY:"):
            names = [n for n in l.split()[1:] if n not in removed]
            l = ".PHONY: " + " ".join(names)
        res.append(l)
    # Blank lines left doubled by a removal.
    final = []
    for l in res:
        if l == "" and final and final[-1] == "":
            continue
        final.append(l)
    return "\n".join(final) + "\n", removed


# ---------------------------------------------------------------- the notes (README.md)

class Ctx:
    """What the notes may not say: leak lines (normalized reference lines), fragments, and
    which paths/targets exist in the handout."""

    def __init__(self, leaks, starter_text, exists, targets, mode_bug):
        self.leaks = leaks            # {normalized line: lab}
        self.starter = starter_text   # normalized starter sources, one string
        self.exists = exists
        self.targets = targets
        self.bug = mode_bug
        self.body = "\n".join(self.leaks)
        self.gone = None              # regex: references to exercises the notes lost
        self.bugnames = None          # regex: the names of the stage's gallery patches

    def leak_in(self, text):
        """The labs whose reference lines TEXT reproduces."""
        t = norm(text)
        return sorted({lab for line, lab in self.leaks.items() if len(line) >= LEAK_MIN and line in t})

    def span_leaks(self, span):
        """A code span that quotes reference code: a whole line, or a long piece of one
        that the starter does not hold."""
        s = norm(span)
        if self.leak_in(s):
            return True
        return len(s) >= 20 and s in self.body and s not in self.starter

    def forbidden(self, text):
        """Why TEXT points at something the handout does not have (None if it does not)."""
        m = re.search(r"bugs/|\.patch\b|\bgall(e|a)ry\b|tests/bench|\bloadgen\b|\bbench/", text, re.I)
        if m:
            return m.group(0)
        m = self.gone and self.gone.search(text)
        if m:
            return m.group(0)
        m = self.bug and re.search(r"\bLAB\b(?!\.md)|\blabs?\b.{0,40}\bstudent", text)
        if m:
            return m.group(0)   # a debugging handout has no LAB markers
        m = self.bugnames and self.bugnames.search(text)
        if m:
            return m.group(0)
        for m in re.finditer(r"(?<![\w.])\.\./([\w.-]+(?:/[\w.-]+)*)", text):
            if not self.exists(m.group(1)):
                return m.group(0)
        for m in re.finditer(r"(?<![\w/.-])(tests/[\w.-]+(?:/[\w.-]+)*)", text):
            if not self.exists(m.group(1).rstrip(".")):
                return m.group(1)
        # A command (in a code span, a code block, after && or ;), not the verb in prose.
        for m in re.finditer(r"(?:^|[`(;&|]\s*)(?:[A-Z_][A-Z0-9_]*=\S*\s+)*make\s+(?:-s\s+)?(-C\s*)?([\w./-]+)",
                             text, re.M):
            if m.group(1):
                if not self.exists(m.group(2)) and not os.path.isabs(m.group(2)):
                    return m.group(0).lstrip("`(;&| ")
            elif re.match(r"^[a-z][\w-]*$", m.group(2)) and m.group(2) not in self.targets:
                return m.group(0).lstrip("`(;&| ")
        return None


def md_blocks(text):
    """Markdown as blocks: dicts with kind (code, table, heading, prose, blank), lines, and
    item (the index of the list item a block belongs to, or None)."""
    lines = text.splitlines()
    blocks, i, item = [], 0, None
    LIST = re.compile(r"^(\s*)(\d+\.|[-*+])\s+")
    while i < len(lines):
        line = lines[i]
        ind = len(line) - len(line.lstrip())
        if not line.strip():
            blocks.append({"kind": "blank", "lines": [line], "item": None})
            i += 1
            continue
        if line.lstrip().startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            kind, new = "code", lines[i:j + 1]
        elif line.lstrip().startswith("|"):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            kind, new = "table", lines[i:j]
            j -= 1
        elif line.startswith("#"):
            kind, new, j = "heading", [line], i
        else:
            j = i + 1
            while j < len(lines) and lines[j].strip() and not LIST.match(lines[j]) and \
                    not lines[j].lstrip().startswith(("```", "|")) and not lines[j].startswith("#"):
                j += 1
            kind, new = "prose", lines[i:j]
            j -= 1
        lm = LIST.match(line) if kind == "prose" else None
        if kind == "heading" or (ind == 0 and not lm):
            item = None
        if lm and ind == 0:
            item = len(blocks)
            blocks.append({"kind": kind, "lines": new, "item": item})
        else:
            blocks.append({"kind": kind, "lines": new, "item": item if ind > 0 or lm else None})
        i = j + 1
    return blocks


CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def drop_parentheticals(s, ctx):
    """S without the (...) groups that point at something missing."""
    depth, start, res, last = 0, None, "", 0
    # Balanced parentheses outside code spans: mask the spans first.
    masked = CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), s)
    for i, ch in enumerate(masked):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0 and ctx.forbidden(s[start:i + 1]):
                res += s[last:start].rstrip(" ")
                last = i + 1
    res += s[last:]
    return res


def split_sentences(s):
    masked = CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), s)
    cuts = [m.end() for m in re.finditer(r"(?<=[.!?:;])\s+(?=[A-Z(*`\[])", masked)]
    parts, last = [], 0
    for c in cuts:
        parts.append(s[last:c])
        last = c
    parts.append(s[last:])
    return parts


def prose_clean(block, ctx, why):
    """A prose block with leaking code spans replaced and the sentences that point at what
    the handout lacks dropped; None to drop the whole block."""
    lines = block["lines"]
    first = lines[0]
    lm = re.match(r"^(\s*(?:\d+\.|[-*+])\s+|\s*)", first)
    prefix = lm.group(1)
    cont = " " * len(prefix)
    if len(lines) > 1:
        cont = re.match(r"^(\s*)", lines[1]).group(1)
    text = " ".join(l.strip() for l in lines)
    text = text[len(prefix.strip()):].strip() if prefix.strip() else text
    orig = text

    def span(m):
        if ctx.span_leaks(m.group(2)):
            why.append("code quoted in the notes")
            return "(code you write: LAB.md)"
        return m.group(0)
    text = CODE_SPAN.sub(span, text)
    if ctx.forbidden(text):
        text = drop_parentheticals(text, ctx)
    if ctx.forbidden(text):
        sents = split_sentences(text)
        keep = [s for s in sents if not ctx.forbidden(s)]
        # A list item whose first sentence goes (an exercise on the gallery), or a block
        # that loses most of itself, goes whole: what is left would not make sense alone.
        if not keep or len(keep) * 2 < len(sents) or (prefix.strip() and ctx.forbidden(sents[0])):
            return None
        text = "".join(keep).strip()
        if not text:
            return None
    if text == orig:
        return lines
    # "a sentence (dropped)." left a space before its stop: outside code spans only.
    parts = re.split(r"(`+[^`]*`+)", text)
    text = "".join(p if p.startswith("`") else re.sub(r"\s+([.,;:])(?=\s|$)", r"\1", p) for p in parts)
    return textwrap.wrap(text, width=WRAP, initial_indent=prefix, subsequent_indent=cont,
                         break_long_words=False, break_on_hyphens=False)


def clean_readme(text, ctx):
    """The stage notes for the handout: cut code replaced by a pointer to LAB.md, what points
    at missing things dropped, and then what points at a dropped exercise ("exercise 4")."""
    gone = set()
    for _ in range(4):
        ctx.gone = re.compile(r"\bexercises? (%s)\b" % "|".join(sorted(gone))) if gone else None
        res, why, dropped = clean_readme_once(text, ctx)
        if dropped <= gone:
            return res, why
        gone |= dropped
    return res, why


def clean_readme_once(text, ctx):
    """One pass: (text, [what was done], {numbers of the exercises dropped})."""
    blocks = md_blocks(text)
    why = []
    drop_items = set()
    out = [None] * len(blocks)
    for k, b in enumerate(blocks):
        kind = b["kind"]
        if kind in ("blank", "heading"):
            out[k] = b["lines"]
            continue
        if kind == "code":
            body = "\n".join(b["lines"][1:-1])
            labs = ctx.leak_in(body)
            if labs:
                ind = re.match(r"^(\s*)", b["lines"][0]).group(1)
                out[k] = [ind + "*(The code of this part is yours to write: LAB.md, lab%s %s.)*"
                          % ("s" if len(labs) > 1 else "", ", ".join("`%s`" % l for l in labs))]
                why.append("code block replaced")
                continue
            if ctx.forbidden(body):
                why.append("code block dropped (%s)" % ctx.forbidden(body))
                out[k] = None
                if b["item"] is not None:
                    drop_items.add(b["item"])
                elif k >= 2 and blocks[k - 2]["kind"] == "prose" and blocks[k - 2]["lines"][-1].rstrip().endswith(":"):
                    out[k - 2] = None
                continue
            out[k] = b["lines"]
            continue
        if kind == "table":
            rows = b["lines"]
            head, sep, body = rows[:1], rows[1:2], rows[2:]
            bad = [r for r in body if ctx.forbidden(r)]
            if ctx.forbidden(head[0]) or (body and len(bad) * 2 >= len(body)) or \
                    (ctx.bug and any(re.search(r"\bbug|patch|mistake", r, re.I) for r in head)):
                why.append("table dropped")
                out[k] = None
                if k >= 2 and blocks[k - 2]["kind"] == "prose" and blocks[k - 2]["lines"][-1].rstrip().endswith(":"):
                    out[k - 2] = None
                continue
            kept = []
            for r in head + sep + [r for r in body if r not in bad]:
                r = CODE_SPAN.sub(lambda m: "(code you write: LAB.md)" if ctx.span_leaks(m.group(2)) else m.group(0), r)
                kept.append(r)
            if bad:
                why.append("%d table row(s) dropped" % len(bad))
            out[k] = kept
            continue
        res = prose_clean(b, ctx, why)
        if res is None:
            why.append("paragraph dropped (%s)" % ctx.forbidden(" ".join(b["lines"])))
            if b["item"] == k:
                drop_items.add(k)
            out[k] = None
        else:
            out[k] = res
    lines, dropped, section = [], set(), ""
    for k, b in enumerate(blocks):
        if b["kind"] == "heading":
            section = b["lines"][0]
        if k in drop_items and re.search(r"exercise", section, re.I):
            m = re.match(r"^(\d+)\.", b["lines"][0])
            if m:
                dropped.add(m.group(1))
        if b["item"] is not None and b["item"] in drop_items:
            continue
        if out[k] is not None:
            lines.extend(out[k])
    # No run of blank lines, no heading left with nothing under it but the next heading.
    res = []
    for l in lines:
        if not l.strip() and res and not res[-1].strip():
            continue
        res.append(l)
    final = []
    for idx, l in enumerate(res):
        if l.startswith("#"):
            nxt = next((x for x in res[idx + 1:] if x.strip()), None)
            if nxt is not None and nxt.startswith("#") and len(nxt) - len(nxt.lstrip("#")) <= len(l) - len(l.lstrip("#")) \
                    and not l.startswith("## "):
                continue
        final.append(l)
    return "\n".join(final).rstrip("\n") + "\n", why, dropped


# ---------------------------------------------------------------- comments in a patched file

def comment_spans(text):
    """[(start, end)] of every C comment in TEXT (strings and char literals skipped)."""
    spans, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            spans.append((i, j))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            spans.append((i, j))
            i = j
        else:
            i += 1
    return spans


def strip_added_comments(old, new):
    """NEW (a patched file) without every comment that touches a line the patch added (or
    changed), and without the added lines that held nothing but such a comment."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    added = set()
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            added.update(range(j1, j2))
    if not added:
        return new, 0
    starts, pos = [], 0
    for l in b:
        starts.append(pos)
        pos += len(l)

    def line_of(off):
        lo, hi = 0, len(starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if starts[mid] <= off:
                lo = mid
            else:
                hi = mid - 1
        return lo
    kill = [(s, e) for s, e in comment_spans(new)
            if any(line_of(s) <= ln <= line_of(max(e - 1, s)) for ln in added)]
    if not kill:
        return new, 0
    chars = list(new)
    for s, e in kill:
        for x in range(s, e):
            if chars[x] != "\n":
                chars[x] = ""
    out_lines = "".join(chars).splitlines(keepends=True)
    res = []
    for idx, l in enumerate(out_lines):
        if idx < len(b) and not l.strip() and b[idx].strip() and (idx in added or any(
                line_of(s) <= idx <= line_of(max(e - 1, s)) for s, e in kill)):
            continue   # a line that was only a comment of the patch's
        res.append(l.rstrip() + "\n" if l.endswith("\n") else l.rstrip())
    return "".join(res), len(kill)


def strip_markers(text):
    """TEXT without the LAB BEGIN/END/STUB comment lines (a debugging handout has no labs)."""
    return "".join(l for l in text.splitlines(keepends=True)
                   if not (BEGIN.match(l) or END.match(l) or STUB.match(l)))


# ---------------------------------------------------------------- LAB.md

def readme_hints(readme, names, limit=3):
    """(sections, sentences) of the cleaned notes that talk about any of NAMES."""
    sections, sentences, section = [], [], None
    for b in md_blocks(readme):
        if b["kind"] == "heading":
            section = b["lines"][0].lstrip("#").strip()
            continue
        if b["kind"] != "prose":
            continue
        text = " ".join(l.strip() for l in b["lines"])
        pats = [re.compile(r"(?<![\w])%s(?![\w])" % re.escape(n)) for n in names]
        for s in split_sentences(text):
            if any(p.search(s) for p in pats):
                if section and section not in sections:
                    sections.append(section)
                s = re.sub(r"^\s*(\d+\.|[-*+])\s+", "", s.strip())
                if re.search(r"LAB\.md|LAB BEGIN|LAB END|code you write", s) or s.endswith(":"):
                    continue
                if len(sentences) < limit and 30 <= len(s) <= 400 and s not in sentences:
                    sentences.append(s)
    return sections, sentences


def wrap(text, prefix=""):
    return textwrap.wrap(text, width=WRAP, initial_indent=prefix, subsequent_indent=prefix,
                         break_long_words=False, break_on_hyphens=False) or [prefix.rstrip()]


def lab_md(stage, title, cut, all_regions, labs, tests, readme, bug, san=None):
    out = ["# %s: %s" % (title, stage), ""]
    run = ["## Build, test, grade", "",
           "Everything runs from this folder (the one holding `LAB.md`):", "",
           "```sh",
           "make                      # builds %s/ (-Wall -Wextra -Werror)" % stage,
           "make test                 # every test of the stage; each failure says why",
           "make test LAB=<name>      # only the tests of one lab (names below)",
           "make grade                # your score per lab, as the grader counts it",
           "make labs                 # each lab's weight and the names of its tests",
           "```", "",
           "The tests need `bats` and `python3` (Debian/Ubuntu: `apt-get install bats python3`).",
           "`TIMEOUT_SCALE=3 make test` gives a slow machine three times the time.",
           "`make grade` here is a self-check with this folder's own test files: your teacher",
           "grades with the kit's copies, so editing a test changes nothing there.", ""]
    weights = {}
    order = []
    for lab, w, _ in labs:
        if lab not in weights:
            weights[lab] = w
            order.append(lab)
    if bug:
        out += ["One plausible bug is in this server; the tests show its symptom; find and fix it.", "",
                "The server in `%s/` is complete and its notes (`%s/README.md`) say how it should"
                % (stage, stage),
                "behave. One change, of the kind people really make, has been put into its code.",
                "Run `make test`: the tests that fail show what goes wrong. Find the cause in the",
                "sources, fix it, and run the tests again until they all pass.", ""]
        if san:
            out += ["This one shows in the sanitized build: `make SAN=%s && make test SAN=%s`." % (san, san), ""]
        out += run
        out += ["## What is graded", "",
                "The same tests as for the labs of this stage, per lab (weights from `%s/labs.txt`):" % stage, ""]
        for lab in order:
            out.append("- `%s`: %s points, %d test%s" % (lab, grade.fmt(weights[lab]), len(tests[lab]),
                                                        "" if len(tests[lab]) == 1 else "s"))
        return "\n".join(out) + "\n"
    cut_names = []
    for r in cut:
        if r["name"] not in cut_names:
            cut_names.append(r["name"])
    written = [n for n in order if n != "contract" and n not in cut_names]
    out += wrap("%d part%s of this server %s for you to write: %s. Each is marked in the sources by"
                " a `// LAB TODO <name>:` comment. Until you write it, a stub stands there: the program"
                " builds and runs, and the lab's tests fail (often with a log line saying the part is"
                " not written yet)."
                % (len(cut_names), "" if len(cut_names) == 1 else "s", "is" if len(cut_names) == 1 else "are",
                   ", ".join("`%s`" % n for n in cut_names))) + [""]
    if written:
        out += ["Already written for you: %s (their tests should pass as they are)."
                % ", ".join("`%s`" % n for n in written), ""]
    out += run
    for name in cut_names:
        rs = [r for r in cut if r["name"] == name]
        out += ["## Lab `%s` (%s points)" % (name, grade.fmt(weights.get(name, 0))), ""]
        task = rs[0]["task"].rstrip(".")
        out += wrap("**The task.** %s." % (task[:1].upper() + task[1:])) + [""]
        where = []
        for r in rs:
            if r["defines"]:
                where.append("`%s`: the whole function%s %s" % (
                    r["file"], "s" if len(r["defines"]) > 1 else "",
                    ", ".join("`%s()`" % d for d in r["defines"])))
            elif r["enclosing"]:
                where.append("`%s`, in `%s()`" % (r["file"], r["enclosing"]))
            else:
                where.append("`%s`" % r["file"])
        places = ["%s%s" % (w, " (%d places)" % where.count(w) if where.count(w) > 1 else "")
                  for w in dict.fromkeys(where)]
        out += wrap("**Where.** %s: at the `// LAB TODO %s:` comment%s." % (
            "; ".join(places), name, "s" if len(rs) > 1 else "")) + [""]
        ts = tests.get(name, [])
        if ts:
            out += wrap("**What the tests check.** %d test%s share%s its %s points (a test can count"
                        " for more than one lab):" % (len(ts), "" if len(ts) == 1 else "s",
                                                       "s" if len(ts) == 1 else "",
                                                       grade.fmt(weights.get(name, 0)))) + [""]
            out += ["- %s" % t for t in ts] + [""]
        else:
            out += ["**What the tests check.** `%s/labs.txt` names no test for this lab yet." % stage, ""]
        funcs = [name] + [d for r in rs for d in r["defines"]] + [r["enclosing"] for r in rs if r["enclosing"]]
        sections, sentences = readme_hints(readme, list(dict.fromkeys(funcs)))
        if sections or sentences:
            out += wrap("**Hints.** %s" % (
                "The notes (`%s/README.md`) explain it in %s." % (
                    stage, ", ".join("\"%s\"" % s for s in sections)) if sections else
                "From the notes (`%s/README.md`):" % stage))
            if sentences:
                out.append("")
            for s in sentences:
                out += wrap(s, "> ")
                out.append(">")
            if sentences:
                out.pop()
            out.append("")
        out += ["**Run its tests.** `make test LAB=%s` (and `make grade LAB=%s` for its score)." % (name, name), ""]
    if "contract" in weights:
        ts = tests.get("contract", [])
        out += ["## The contract (%s points)" % grade.fmt(weights["contract"]), "",
                "What every answer keeps (options, signals, the listening socket, the unit tests of",
                "the parts given): %d test%s, `make test LAB=contract`. They pass before you start;"
                % (len(ts), "" if len(ts) == 1 else "s"),
                "keep them passing.", ""]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main

def usage(msg):
    raise Usage(msg + "\nusage: tests/handout STAGE OUT.tar.gz [--labs \"a b\"] [--bug NAME]   (--help: more)")


def parse(argv):
    pos, labs, bug = [], [], None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--labs", "--bug"):
            if i + 1 >= len(argv):
                usage("%s needs a value" % a)
            v = argv[i + 1]
            i += 2
        elif a.startswith(("--labs=", "--bug=")):
            a, v = a.split("=", 1)
            i += 1
        elif a.startswith("-") and a != "-":
            usage("unknown option %s" % a)
        else:
            pos.append(a)
            i += 1
            continue
        if a == "--labs":
            labs += v.split()
        elif v.strip():
            bug = v.strip()
    if len(pos) != 2:
        usage("want STAGE and OUT")
    return pos[0], pos[1], labs, bug


def stage_dir(arg):
    arg = arg.rstrip("/")
    for name in sorted(os.listdir(KIT)):
        if re.match(r"^\d\d_", name) and os.path.isfile(os.path.join(KIT, name, "Makefile")) and \
                (name == arg or name.split("_")[0] == arg):
            return name
    return None


def copy_stage(src, dst, built):
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith("build-")]
        rel = os.path.relpath(dirpath, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for f in filenames:
            if SKIP_FILES.search(f) or (rel == "." and f in built):
                continue
            shutil.copy2(os.path.join(dirpath, f), os.path.join(dst, rel, f))


def built_names(sdir):
    """What the stage's `make` builds in its folder: PROGS and TESTS, continuation lines too."""
    built = set()
    text = read(os.path.join(sdir, "Makefile")).replace("\\\n", " ")
    for line in text.splitlines():
        m = re.match(r"^(PROGS|TESTS)\s*:?=\s*(.*)$", line)
        if m:
            built.update(m.group(2).split())
    return built


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def make(stage_arg, out, want_labs, bug):
    stage = stage_dir(stage_arg)
    if stage is None:
        usage("no stage %r in the kit (01 .. 08, or a folder name such as 04_epoll)" % stage_arg)
    out = os.path.abspath(os.path.expanduser(out))
    m = re.match(r"^(.+?)\.(tar\.gz|tgz)$", os.path.basename(out))
    if not m or not re.match(r"^[\w][\w.+-]*$", m.group(1)):
        usage("OUT must be a file name ending in .tar.gz or .tgz (e.g. lab04.tar.gz): %r" % out)
    top = m.group(1)
    if os.path.lexists(out):
        usage("%s exists: remove it first (a handout is never overwritten)" % out)
    if bug and want_labs:
        usage("give LABS or BUG, not both")
    sdir = os.path.join(KIT, stage)
    all_regions = regions(sdir)
    labs = grade.read_labs(stage)
    if not labs:
        usage("%s has no labs.txt: it has no labs to hand out" % stage)
    region_names = list(dict.fromkeys(r["name"] for r in all_regions))
    if not bug:
        if not all_regions:
            usage("%s has no LAB regions" % stage)
        missing = [n for n in want_labs if n not in region_names]
        if missing:
            usage("%s has no LAB region named %s (its labs: %s)" % (stage, ", ".join(missing), " ".join(region_names)))
    patch = None
    if bug:
        name = bug[:-6] if bug.endswith(".patch") else bug
        patch = os.path.join(sdir, "bugs", name + ".patch")
        if "/" in name or not os.path.isfile(patch):
            have = sorted(f[:-6] for f in os.listdir(os.path.join(sdir, "bugs"))) if os.path.isdir(
                os.path.join(sdir, "bugs")) else []
            usage("%s has no bug named %r (bugs/%s.patch); it has: %s" % (stage, name, name, " ".join(have) or "none"))
        bug = name

    scratch = tempfile.mkdtemp(prefix="kit-handout.")
    try:
        root = os.path.join(scratch, top)
        hs = os.path.join(root, stage)
        os.makedirs(root)
        cut = []
        if bug:
            copy_stage(sdir, hs, built_names(sdir))
            before = {r: read(os.path.join(hs, r)) for r in c_sources(hs)}
            p = subprocess.run(["patch", "-p1", "-s", "-f", "--no-backup-if-mismatch", "-r", "-", "-d", root,
                                "-i", patch], capture_output=True, text=True)
            if p.returncode != 0:
                raise CheckFailed("bugs/%s.patch does not apply to %s: %s" % (bug, stage, (p.stdout + p.stderr).strip()))
            stripped = 0
            for r in c_sources(hs):
                text = read(os.path.join(hs, r))
                if text != before.get(r):
                    text, k = strip_added_comments(before.get(r, ""), text)
                    stripped += k
                write(os.path.join(hs, r), strip_markers(text))
            print("%s: bugs/%s.patch applied; %d comment%s of its lines removed"
                  % (stage, bug, stripped, "" if stripped == 1 else "s"))
        else:
            p = subprocess.run([os.path.join(KIT, "tests", "lab"), stage, hs] + want_labs,
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise CheckFailed("tests/lab failed: %s" % (p.stdout + p.stderr).strip())
            cut = [r for r in all_regions if not want_labs or r["name"] in want_labs]
            # The TODO's second line names the teacher's paths; the student's command instead.
            for r in c_sources(hs):
                lines = read(os.path.join(hs, r)).splitlines(keepends=True)
                name, changed = None, False
                for i, l in enumerate(lines):
                    t = TODO.match(l)
                    if t:
                        name = t.group(2)
                    h = HINT.match(l)
                    if h and name:
                        lines[i] = "%s// (write this part; LAB.md says what its tests check: make test LAB=%s)\n" % (
                            h.group(1), name)
                        changed = True
                if changed:
                    write(os.path.join(hs, r), "".join(lines))
        # What tests/lab may let through: a built program (a TESTS list on two lines), any
        # other executable the build made.
        built = built_names(sdir)
        for leftover in walk_files(hs):
            rel = os.path.relpath(leftover, hs)
            if SKIP_FILES.search(os.path.basename(leftover)) or rel in built or is_elf(leftover):
                os.unlink(leftover)
        # The harness pieces.
        for rel in harness_files(stage):
            dst = os.path.join(root, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(KIT, rel), dst)

        def exists(rel_from_stage):
            return os.path.exists(os.path.normpath(os.path.join(hs, "..", rel_from_stage)))

        def exists_top(rel):
            return os.path.exists(os.path.join(root, rel))
        mk, removed = clean_makefile(read(os.path.join(hs, "Makefile")), exists)
        write(os.path.join(hs, "Makefile"), mk)
        targets = set(re.findall(r"^([a-z][\w-]*)\s*:(?![=:])", mk, re.M)) | {"test", "grade", "clean", "all"}

        # What would give the answers away: the cut reference lines the starter lacks.
        starter_lines = set()
        starter_text = []
        for r in c_sources(hs):
            for l in read(os.path.join(hs, r)).splitlines():
                starter_lines.add(norm(l))
                starter_text.append(norm(l))
        leaks = {}
        for r in cut:
            for l in r["body"]:
                n = norm(l)
                if len(n) >= LEAK_MIN and n not in starter_lines and not n.startswith("//"):
                    leaks.setdefault(n, r["name"])

        class Exists:
            def __call__(self, rel):
                return exists(rel) or exists_top(rel)
        ctx = Ctx(leaks, "\n".join(starter_text), Exists(), targets, bool(bug))
        # A list of the gallery's patches by name (an exercise) points at bugs/ too; in a
        # debugging handout it would name the bug.
        stems = sorted((f[:-6] for f in os.listdir(os.path.join(sdir, "bugs")) if f.endswith(".patch")),
                       key=len, reverse=True) if os.path.isdir(os.path.join(sdir, "bugs")) else []
        if stems:
            ctx.bugnames = re.compile(r"(?<![\w-])(%s)(?![\w-])" % "|".join(
                re.escape(x) if "-" in x else "(?<=`)%s(?=`)" % re.escape(x) for x in stems))
        readme_path = os.path.join(hs, "README.md")
        readme = ""
        if os.path.isfile(readme_path):
            readme, _ = clean_readme(read(readme_path), ctx)
            write(readme_path, readme)

        tests = {}
        names = [n for f in sorted(os.listdir(sdir)) if re.match(r"^test.*\.bats$", f)
                 for n in grade.test_names(os.path.join(sdir, f))]
        for lab, _, _ in labs:
            tests[lab] = [n for n in names if lab in grade.labs_of(n, labs)]
        title = "Debugging exercise" if bug else "Lab handout"
        san = None
        if bug:
            m = re.search(r"^SAN:\s*(\S+)", read(patch).split("\n--- ", 1)[0], re.M)
            san = m and m.group(1)
        write(os.path.join(root, "LAB.md"), lab_md(stage, title, cut, all_regions, labs, tests, readme, bug, san))
        write(os.path.join(root, "Makefile"), TOP_MAKEFILE.format(top=top, stage=stage))

        # The checks: no reference line, no patch name or header, no leftovers, anywhere.
        problems = []
        header = []
        if bug:
            for l in read(patch).splitlines():
                if l.startswith(("--- ", "diff ")):
                    break
                # What the patch says of itself (Bug:, Symptom:, and lines that go on from
                # them); not its metadata (Caught-by: names tests, SAN: a build).
                key = re.match(r"^([A-Z][\w-]*):", l)
                if key and key.group(1) not in ("Bug", "Symptom"):
                    continue
                if l.strip():
                    header.append(norm(re.sub(r"^[A-Z][\w-]*:\s*", "", l)))
        for f in walk_files(root):
            rel = os.path.relpath(f, root)
            base = os.path.basename(f)
            if SKIP_FILES.search(base) or base.endswith(".patch") or "/bugs/" in "/" + rel:
                problems.append("%s: should not be handed out" % rel)
                continue
            if not is_text(f):
                continue
            for ln, l in enumerate(read(f).splitlines(), 1):
                n = norm(l)
                if not n:
                    continue
                if n in leaks or (rel.endswith(".md") and ctx.leak_in(n)):
                    problems.append("%s:%d: reference code of lab %s: %s" % (rel, ln, leaks.get(n) or ctx.leak_in(n)[0], n))
                if bug and (bug in l or any(len(h) >= 16 and h in n for h in header)):
                    problems.append("%s:%d: names the bug: %s" % (rel, ln, n))
        if problems:
            raise CheckFailed("the handout would give away what it should not; nothing written:\n  " +
                              "\n  ".join(problems[:20]))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp_out = out + ".part"
        t = subprocess.run(["tar", "-C", scratch, "--owner=0", "--group=0", "-czf", tmp_out, top],
                           capture_output=True, text=True)
        if t.returncode != 0:
            raise CheckFailed("tar failed: %s" % t.stderr.strip())
        os.rename(tmp_out, out)
        nfiles = sum(1 for _ in walk_files(root))
        if bug:
            print("%s: %s, %d files, unpacks to %s/: the whole stage with one gallery bug in it" % (out, stage, nfiles, top))
        else:
            print("%s: %s, %d files, unpacks to %s/; labs cut out: %s" % (
                out, stage, nfiles, top, " ".join(dict.fromkeys(r["name"] for r in cut))))
        if removed:
            print("  left out of %s/Makefile (they need what the handout lacks): %s" % (stage, " ".join(sorted(removed))))
        print("  the student: tar xzf %s && cd %s && make && make test   (LAB.md says what to write)"
              % (os.path.basename(out), top))
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


TOP_MAKEFILE = """\
# {top}: stage {stage} of the course kit, handed out. LAB.md says what to write.
#
#   make                  build {stage}/
#   make test             every test of the stage (tests/run); LAB=name: only that lab's tests
#   make grade            the score per lab (tests/lib/grade.py on this folder); LAB=name: one lab
#   make clean
#   TIMEOUT_SCALE=3 make test    three times the time for every deadline (a slow machine)
#   make SAN=address,undefined   a sanitized build (make test SAN=... tests it)

STAGE := {stage}

all:
\t$(MAKE) -C $(STAGE)

test: all
\tSAN='$(SAN)' python3 tests/lib/handout_run.py test $(STAGE) '$(LAB)'

grade:
\tpython3 tests/lib/handout_run.py grade $(STAGE) '$(LAB)'

labs:
\t@python3 tests/lib/handout_run.py labs $(STAGE)

clean:
\t$(MAKE) -C $(STAGE) clean
\trm -rf tests/.out results.json

.PHONY: all test grade labs clean
"""


def main(argv):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # `tests/handout ... | head` ends quietly
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    try:
        stage, out, labs, bug = parse(argv)
        return make(stage, out, labs, bug)
    except Usage as e:
        print("tests/handout: %s" % e, file=sys.stderr)
        return 2
    except CheckFailed as e:
        print("tests/handout: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
