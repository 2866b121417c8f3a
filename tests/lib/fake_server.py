#!/usr/bin/env python3
"""fake_server: a deliberately broken echo server, for testing that the harness notices.

usage: fake_server.py MODE -p PORT
MODE: good | silent (never prints `listening on`) | bad-exit (exits 3 on SIGTERM)
      | slow-exit (ignores SIGTERM) | asan (prints a sanitizer report at SIGTERM, exits 0)
      | asan-crash (on its first connection prints a sanitizer report and dies, exit 66,
        as an ASan build does on a use-after-free: the test's client fails first)
      | corrupt (echoes every byte but flips one at offset 1000)
      | lossy (its handler sets a flag that the accept loop tests before blocking: a SIGTERM
        landing between the test and accept() is lost, the classic race)
      | leaky (opens a pipe without O_CLOEXEC before it listens, as an epoll or eventfd
        created without its CLOEXEC flag would be)
"""
import os
import select
import signal
import socket
import sys
import threading

# What AddressSanitizer prints on a use-after-free (addresses and frames made up): the head
# names the bug and where; the shadow-byte map and its legend, which end it, are the same for
# every bug. The harness must show the head.
ASAN_REPORT = """=================================================================
==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010 at pc 0x55d0c0de1234 bp 0x7ffd00001000 sp 0x7ffd00000ff0
READ of size 1 at 0x602000000010 thread T0
    #0 0x55d0c0de1234 in conn_flush_output fake_server.c:42
    #1 0x55d0c0de5678 in event_loop fake_server.c:77
    #2 0x55d0c0de9abc in main fake_server.c:99

0x602000000010 is located 0 bytes inside of 16-byte region [0x602000000010,0x602000000020)
freed by thread T0 here:
    #0 0x7f0000001000 in free
    #1 0x55d0c0de2222 in conn_close fake_server.c:30

previously allocated by thread T0 here:
    #0 0x7f0000002000 in malloc
    #1 0x55d0c0de3333 in conn_new fake_server.c:20

SUMMARY: AddressSanitizer: heap-use-after-free fake_server.c:42 in conn_flush_output
Shadow bytes around the buggy address:
""" + "".join("  0x0c047fff7f%02x: fa fa 00 00 fa fa 00 00 fa fa 00 00 fa fa 00 00\n" % (i * 16)
              for i in range(10)) + """Shadow byte legend (one shadow byte represents 8 application bytes):
  Addressable:           00
  Partially addressable: 01 02 03 04 05 06 07
  Heap left redzone:       fa
  Freed heap region:       fd
  Stack left redzone:      f1
  Stack mid redzone:       f2
  Stack right redzone:     f3
  Stack after return:      f5
  Stack use after scope:   f8
  Global redzone:          f9
  Global init order:       f6
  Poisoned by user:        f7
  Container overflow:      fc
  Array cookie:            ac
  Intra object redzone:    bb
  ASan internal:           fe
  Left alloca redzone:     ca
  Right alloca redzone:    cb
==4242==ABORTING
"""


def main():
    mode = sys.argv[1]
    port = int(sys.argv[sys.argv.index("-p") + 1])
    if mode == "leaky":
        r, _ = os.pipe()
        os.set_inheritable(r, True)  # what a missing O_CLOEXEC leaves
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)

    def on_term(*_):
        if mode == "bad-exit":
            os._exit(3)
        if mode == "asan":
            sys.stderr.write(ASAN_REPORT)
            sys.stderr.flush()
        os._exit(0)

    stop = []
    if mode == "lossy":
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "slow-exit" else on_term)
    if mode != "silent":
        print("listening on 127.0.0.1:%d" % srv.getsockname()[1], flush=True)

    def serve(c):
        if mode == "asan-crash":
            sys.stderr.write(ASAN_REPORT)
            sys.stderr.flush()
            os._exit(66)
        seen = 0
        while True:
            d = c.recv(65536)
            if not d:
                break
            if mode == "corrupt" and seen <= 1000 < seen + len(d):
                i = 1000 - seen
                d = d[:i] + bytes([d[i] ^ 0xFF]) + d[i + 1:]
            seen += len(d)
            c.sendall(d)
        c.close()

    def accept_loop():
        while not stop:
            # lossy: accept() is retried after an interrupting handler (PEP 475), and a
            # signal that came before it started does not interrupt it at all.
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    if mode == "lossy":
        accept_loop()
        sys.exit(0)
    # The others never lose it: a self-pipe. The C-level handler writes a byte to `w`
    # whenever SIGTERM arrives, so select() returns even for a signal that came before it
    # started, and Python then runs on_term.
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    while True:
        ready, _, _ = select.select([srv, r], [], [])
        if r in ready:
            os.read(r, 512)
        if srv in ready:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()


    sys.exit(0)


if __name__ == "__main__":
    main()
