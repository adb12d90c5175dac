//! Small python3 helpers, run with `python3 -c` inside namespaces. Every one of them is
//! bounded in time and count and stops by itself.

/// `UDP_LISTENER PORT SECONDS`: listens on 0.0.0.0:PORT and [::]:PORT, prints `READY` once
/// bound, then one line `GOT <source-address> <payload>` per datagram, for at most SECONDS.
pub const UDP_LISTENER: &str = r#"
import select, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
socks = []
for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    socks.append(s)
print("READY", flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    ready, _, _ = select.select(socks, [], [], 0.2)
    for s in ready:
        data, src = s.recvfrom(65535)
        print("GOT %s %s" % (src[0], data.decode("ascii", "replace")), flush=True)
"#;

/// `UDP_SEND SRC DST PORT PAYLOAD...`: sends each PAYLOAD as one datagram from SRC (bound,
/// ephemeral port) to DST:PORT, in order.
pub const UDP_SEND: &str = r#"
import socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
for payload in sys.argv[4:]:
    s.sendto(payload.encode(), (dst, port))
"#;

/// WireGuard handshake-initiation flooding and its mac1 self-check.
///
/// * `HANDSHAKE flood PUBKEY HOST PORT RATE SECONDS [SPOOF_PREFIX]`: sends 148-byte type-1
///   messages (each from a random address of SPOOF_PREFIX if given, which must be routed as
///   local in the sending namespace) with
///   random sender index, ephemeral, encrypted static and timestamp, a valid mac1 for PUBKEY
///   (BLAKE2s-128 keyed with BLAKE2s-256("mac1----" || PUBKEY) over the first 116 bytes) and a
///   zero mac2, paced at RATE per second for SECONDS (never more than RATE*SECONDS messages).
///   Prints `STARTED`, then at the end
///   `sent=N elapsed=S rate=R send_errors=E replies=Q cookie_replies=C`.
/// * `HANDSHAKE check PUBKEY PORT`: receives one datagram on 127.0.0.1:PORT (10 s at most) and
///   prints `MAC1-OK` if it is a handshake initiation whose mac1 this script computes the same
///   way for PUBKEY, `MAC1-MISMATCH ...` otherwise. Pointing a real WireGuard peer at it
///   proves the flood's messages pass the target's mac1 check.
pub const HANDSHAKE: &str = r#"
import base64, hashlib, os, socket, sys, time

def mac1_key(pub_b64):
    pub = base64.b64decode(pub_b64)
    assert len(pub) == 32
    return hashlib.blake2s(b"mac1----" + pub).digest()

def mac1(key, msg):
    return hashlib.blake2s(msg[:116], key=key, digest_size=16).digest()

mode = sys.argv[1]
if mode == "check":
    key, port = mac1_key(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.settimeout(10)
    print("READY", flush=True)
    data, _ = s.recvfrom(2048)
    if len(data) != 148 or data[0] != 1:
        print("NOT-INITIATION len=%d type=%d" % (len(data), data[0]), flush=True)
    elif mac1(key, data) == data[116:132]:
        print("MAC1-OK", flush=True)
    else:
        print("MAC1-MISMATCH got=%s computed=%s" % (data[116:132].hex(), mac1(key, data).hex()), flush=True)
    sys.exit(0)

assert mode == "flood"
key, host, port = mac1_key(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rate, seconds = float(sys.argv[5]), float(sys.argv[6])
spoof = sys.argv[7] if len(sys.argv) > 7 else None
limit = int(rate * seconds)
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
if spoof:
    # Every message from a random address of the SPOOF prefix, which the caller routes to
    # this namespace as local (ip route add local PREFIX dev lo): IP_PKTINFO picks the source.
    import ipaddress, random, struct
    net = ipaddress.ip_network(spoof)
    base, size = int(net.network_address), net.num_addresses
    s.bind(("0.0.0.0", 0))
    dest = (host, port)
    def send(pkt):
        src = (base + random.randrange(1, size - 1)).to_bytes(4, "big")
        s.sendmsg([pkt], [(socket.IPPROTO_IP, 8, struct.pack("@i4s4s", 0, src, bytes(4)))], 0, dest)
else:
    s.connect((host, port))
    send = s.send
s.setblocking(False)
sent = send_errors = replies = cookie_replies = 0
print("STARTED", flush=True)
start = time.monotonic()
end = start + seconds
while sent < limit:
    now = time.monotonic()
    if now >= end:
        break
    due = min(limit, int((now - start) * rate) + 1)
    while sent < due:
        body = b"\x01\x00\x00\x00" + os.urandom(112)
        try:
            send(body + mac1(key, body) + bytes(16))
            sent += 1
        except BlockingIOError:
            send_errors += 1
            break
        except OSError:
            send_errors += 1
            break
    while True:
        try:
            reply = s.recv(2048)
        except BlockingIOError:
            break
        except OSError:
            send_errors += 1
            break
        replies += 1
        if reply[:1] == b"\x03":
            cookie_replies += 1
    time.sleep(0.001)
elapsed = time.monotonic() - start
print("sent=%d elapsed=%.3f rate=%.0f send_errors=%d replies=%d cookie_replies=%d"
      % (sent, elapsed, sent / elapsed, send_errors, replies, cookie_replies), flush=True)
"#;

/// Extracts `key=value` from a line like the flood's summary.
pub fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}
