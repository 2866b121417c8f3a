#!/usr/bin/env python3
"""fake_server: a deliberately broken echo server, for testing that the harness notices.

usage: fake_server.py MODE -p PORT
MODE: good | silent (never prints `listening on`) | bad-exit (exits 3 on SIGTERM)
      | slow-exit (ignores SIGTERM) | asan (prints a sanitizer report, exits 0)
      | corrupt (echoes every byte but flips one at offset 1000)
      | lossy (its handler sets a flag that the accept loop tests before blocking: a SIGTERM
        landing between the test and accept() is lost, the classic race)
"""
import os
import select
import signal
import socket
import sys
import threading


def main():
    mode = sys.argv[1]
    port = int(sys.argv[sys.argv.index("-p") + 1])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)

    def on_term(*_):
        if mode == "bad-exit":
            os._exit(3)
        if mode == "asan":
            sys.stderr.write("==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n")
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
