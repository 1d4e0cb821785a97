#!/usr/bin/env python3
"""What one hostile client can make a running bus hold: two probes for tracker issue 17.

    python3 perf/shield_probe.py stalled --addr 127.0.0.1:4720 --pid PID [--conns 1000]
        [--max-frame-bytes 1048576] [--after-hello] [--hold-secs 15]
    python3 perf/shield_probe.py control --addr 127.0.0.1:4720 --audit DATA_DIR/audit.log
        [--pulses 1000] [--conns 10]

`stalled` opens --conns connections that each send a length prefix of --max-frame-bytes and 16
bytes of body (after a Hello with --after-hello), then reads the bus's VmRSS and VmSize from
/proc/PID/status before, right after, and every few seconds while it holds them, and how many
of the connections the bus has closed.

`control` sends --pulses `sys.control.policy.load` pulses (split over --conns anonymous
connections, each with a 4 KiB client name and a 16 KiB producer id) and reports how many bytes
the audit log grew by.

No dependencies: the few frames needed are encoded by hand (proto/arqon/v1/arqon.proto).
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import time


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint((number << 3) | 2) + varint(len(value)) + value


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def hello(client_name: str) -> bytes:
    # ClientFrame { correlation_id = 1, hello = 2 { protocol_version = 1, client_name = 2 } }
    h = field_varint(1, 1) + field_bytes(2, client_name.encode())
    return frame(field_varint(1, 1) + field_bytes(2, h))


def control_publish(correlation_id: int, producer: str) -> bytes:
    # PolicyLoad { name = 1 } inside Any { type_url = 1, value = 2 }
    load = field_bytes(1, b"lockdown")
    any_ = field_bytes(1, b"type.googleapis.com/arqon.policy.v1.PolicyLoad") + field_bytes(2, load)
    message = (
        field_bytes(3, b"sys.control.policy.load")
        + field_bytes(4, producer.encode())
        + field_bytes(5, b"ops")
        + field_bytes(8, any_)
    )
    publish = field_bytes(1, message)  # no ack: the flood does not wait for answers
    return frame(field_varint(1, correlation_id) + field_bytes(3, publish))


def read_frame(sock: socket.socket) -> bytes:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    (n,) = struct.unpack(">I", exact(4))
    return exact(n)


def status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmSize", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def parse_addr(text: str) -> tuple:
    host, _, port = text.rpartition(":")
    return host, int(port)


def stalled(args) -> None:
    addr = parse_addr(args.addr)
    before = status(args.pid)
    print(f"before: {before}")
    socks = []
    for i in range(args.conns):
        s = socket.create_connection(addr)
        if args.after_hello:
            s.sendall(hello(f"stall-{i}"))
            read_frame(s)  # Welcome
        s.sendall(struct.pack(">I", args.max_frame_bytes) + b"x" * 16)
        socks.append(s)
    time.sleep(1)
    print(f"{args.conns} stalled partial frames held: {status(args.pid)}")
    start = time.time()
    while time.time() - start < args.hold_secs:
        time.sleep(args.hold_secs / 3)
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(65536) == b"":
                    closed += 1
                else:
                    closed += 1  # an error frame, then the close
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        print(f"after {time.time() - start:.0f} s: {status(args.pid)}, closed by the bus: {closed}")
    for s in socks:
        s.close()


def control(args) -> None:
    addr = parse_addr(args.addr)
    size = lambda: os.path.getsize(args.audit) if os.path.exists(args.audit) else 0
    before = size()
    per_conn = args.pulses // args.conns
    sent = 0
    socks = []
    for c in range(args.conns):
        s = socket.create_connection(addr)
        s.sendall(hello("x" * 4096))
        read_frame(s)
        batch = b"".join(control_publish(2 + i, "p" * 16384) for i in range(per_conn))
        s.sendall(batch)
        sent += per_conn
        socks.append(s)
    # Let the bus work through them (each refusal was an fsync before the fix).
    last, still = -1, 0
    while still < 3:
        time.sleep(1)
        now = size()
        still = still + 1 if now == last else 0
        last = now
    print(f"{sent} anonymous control pulses: audit log grew by {size() - before} bytes")
    for s in socks:
        s.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="probe", required=True)
    st = sub.add_parser("stalled")
    st.add_argument("--addr", default="127.0.0.1:4720")
    st.add_argument("--pid", type=int, required=True)
    st.add_argument("--conns", type=int, default=1000)
    st.add_argument("--max-frame-bytes", type=int, default=1 << 20)
    st.add_argument("--after-hello", action="store_true")
    st.add_argument("--hold-secs", type=float, default=15)
    ct = sub.add_parser("control")
    ct.add_argument("--addr", default="127.0.0.1:4720")
    ct.add_argument("--audit", required=True)
    ct.add_argument("--pulses", type=int, default=1000)
    ct.add_argument("--conns", type=int, default=10)
    args = p.parse_args()
    {"stalled": stalled, "control": control}[args.probe](args)


if __name__ == "__main__":
    sys.exit(main())
