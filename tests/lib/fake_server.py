#!/usr/bin/env python3
"""fake_server: a deliberately broken echo server, for testing that the harness notices.

usage: fake_server.py MODE -p PORT
MODE: good | silent (never prints `listening on`) | bad-exit (exits 3 on SIGTERM)
      | slow-exit (ignores SIGTERM) | asan (prints a sanitizer report, exits 0)
      | corrupt (echoes every byte but flips one at offset 1000)
"""
import os
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

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
