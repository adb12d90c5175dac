# shellcheck shell=bash
# What the image's boot tests share: the step reporting, cleanup, booting the image in
# qemu inside the test's network namespace, the HTTPS API, and enrolling a device whose
# tunnel is checked with ping. Sourced by image/test and image/test-update, which set
# $name, $tmp, $ns, $out, $bin and the OVMF and disk paths first.

current="start"
step() { current=$*; printf '\n==> %s: %s\n' "$name" "$*"; }
ok() { printf '%s: ok: %s\n' "$name" "$*"; }
fail() { printf '\n%s: FAILED at step: %s: %s\n' "$name" "$current" "$*" >&2; exit 1; }

inns() { ip netns exec "$ns" "$@"; }

# Printable serial console text: no colours, no carriage returns, and no "[ uptime]
# unit[pid]: " prefix that journald puts on lines it forwards to the console.
console_text() {
  sed -e 's/\x1b\[[0-9;=?]*[A-Za-z]//g' -e 's/\r//g' \
    -e 's/^\[ *[0-9.]*\] [A-Za-z0-9_.@-]*\[[0-9]*\]: //' "$1"
}

# Whether the console shows a line matching grep's ARGS. grep reads to the end: with -q
# it would stop at the first match, and pipefail would turn sed's SIGPIPE into a miss.
on_console() { console_text "$serial" | grep "$@" >/dev/null; }

cleanup() {
  rc=$?
  set +e
  if [ $rc -ne 0 ] && [ -n "$serial" ] && [ -f "$serial" ]; then
    echo "---- last lines of the serial console ($serial) ----" >&2
    console_text "$serial" | tail -n 60 >&2
    echo "----" >&2
  fi
  [ -n "$wgpid" ] && kill "$wgpid" 2>/dev/null && wait "$wgpid" 2>/dev/null
  [ -n "$sshdpid" ] && kill "$sshdpid" 2>/dev/null && wait "$sshdpid" 2>/dev/null
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill "$qpid" 2>/dev/null
    wait "$qpid" 2>/dev/null
  fi
  ip netns del "$ns" 2>/dev/null
  mkdir -p "$out/test-logs"
  cp "$tmp"/serial-*.log "$out/test-logs/" 2>/dev/null
  rm -rf "$tmp"
  [ $rc -eq 0 ] || echo "$name: serial logs kept in $out/test-logs" >&2
  exit $rc
}

accel=tcg
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qE 'vmx|svm' /proc/cpuinfo; then accel=kvm; fi

boot() {
  serial=$tmp/serial-$1.log
  : > "$serial"
  # Started through `ip netns exec` directly (it execs qemu), so $! is qemu's pid.
  ip netns exec "$ns" qemu-system-x86_64 -machine q35 -accel "$accel" -m 1024 -smp 2 \
    -nographic -monitor none -serial "file:$serial" \
    -qmp "unix:$tmp/qmp.sock,server=on,wait=off" \
    -drive "if=pflash,format=raw,readonly=on,file=$ovmf_code" \
    -drive "if=pflash,format=raw,file=$tmp/vars.fd" \
    -drive "file=$tmp/disk.qcow2,if=virtio,format=qcow2" \
    -nic "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:443-:443,hostfwd=udp:127.0.0.1:51820-:51820" \
    </dev/null >"$tmp/qemu-$1.out" 2>&1 &
  qpid=$!
  echo "qemu ($accel) started, pid $qpid; waiting for 'watchgrid: ready' on the serial console"
  await_ready 1 "$1"
}

# Waits for the COUNTth readiness line and selfcheck line on this qemu's console (a guest
# that reboots by itself keeps its qemu and console); sets ready_secs and selfcheck.
await_ready() { # COUNT WHAT
  local t0=$SECONDS
  until [ "$(console_text "$serial" | grep -cx 'watchgrid: ready')" -ge "$1" ]; do
    kill -0 "$qpid" 2>/dev/null || { cat "$tmp/qemu-"*.out >&2; fail "qemu exited before the daemon was ready"; }
    [ $((SECONDS - t0)) -lt 900 ] || fail "no readiness line after 900 s"
    sleep 1
  done
  ready_secs=$((SECONDS - t0))
  echo "to ready: ${ready_secs} s ($2 boot)"
  until [ "$(console_text "$serial" | grep -c '^watchgrid-selfcheck: ')" -ge "$1" ]; do
    [ $((SECONDS - t0)) -lt 1200 ] || fail "no selfcheck line"
    sleep 1
  done
  selfcheck=$(console_text "$serial" | grep '^watchgrid-selfcheck: ' | tail -n1)
  echo "$selfcheck"
}

api() { # METHOD PATH [JSON] [extra curl args...]
  local method=$1 path=$2 body=${3:-}
  shift 3 || shift $#
  inns curl -sS --fail-with-body --max-time 30 --cacert "$tmp/ca.crt" \
    --resolve localhost:443:127.0.0.1 -X "$method" -H 'content-type: application/json' \
    ${body:+--data "$body"} "$@" "https://localhost$path"
}
json() { python3 -c 'import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(",".join(v) if isinstance(v, list) else v)' "$1"; }
# The hosts the console banner offers; the certificate covers each of them.
banner_hosts() { console_text "$serial" | sed -n 's|^  open *https://\([^/]*\)/.*|\1|p' | sort -u; }
banner_value() { console_text "$serial" | sed -n "s/^  $1 *//p" | tail -n1 | cut -d' ' -f1; }

# Enrolls device NAME: a one-use enrollment token, a new key pair (private key in
# $tmp/key-NAME), POST /api/register (the answer in $tmp/reg-NAME.json). Sets reg_ack to
# a time no later than the 200's arrival: the $EPOCHREALTIME before curl started plus
# curl's own time_total, so that a delay measured from it is an upper bound.
register() { # NAME
  local enroll key pub t0 res
  enroll=$(api POST /api/enrollment-tokens "{\"name\":\"$1\",\"uses\":1}" "${auth[@]}" | json token)
  key=$(wg genkey)
  pub=$(wg pubkey <<<"$key")
  printf '%s\n' "$key" >"$tmp/key-$1"
  t0=$EPOCHREALTIME
  res=$(api POST /api/register "{\"token\":\"$enroll\",\"public_key\":\"$pub\",\"hostname\":\"$1\"}" \
    -o "$tmp/reg-$1.json" -w '%{http_code} %{time_total}') ||
    fail "POST /api/register ($1): ${res%% *}: $(cat "$tmp/reg-$1.json" 2>/dev/null)"
  [ "${res%% *}" = 200 ] || fail "POST /api/register ($1) answered HTTP ${res%% *}, not 200"
  reg_ack=$(awk -v a="$t0" -v b="${res#* }" 'BEGIN { printf "%.6f", a + b }')
}
reg_field() { json "$2" <"$tmp/reg-$1.json"; } # NAME FIELD

# Points wgimg0 at the hub as device NAME (registered by `register`): its key and
# addresses, the hub's key, endpoint and routes from its answer, replacing what was set.
tunnel() { # NAME
  local address allowed a r p
  address=$(reg_field "$1" address)
  allowed=$(reg_field "$1" allowed_ips)
  for p in $(inns wg show wgimg0 peers); do inns wg set wgimg0 peer "$p" remove; done
  inns wg set wgimg0 private-key "$tmp/key-$1" peer "$(reg_field "$1" hub_public_key)" \
    endpoint "$(reg_field "$1" endpoint)" allowed-ips "$(tr -d ' ' <<<"$allowed")" persistent-keepalive 25
  inns ip addr flush dev wgimg0
  for a in ${address//,/ }; do
    case $a in */*) ;; *:*) a=$a/128 ;; *) a=$a/32 ;; esac
    inns ip addr add "$a" dev wgimg0
  done
  inns ip link set wgimg0 up
  for r in ${allowed//,/ }; do inns ip route replace "$r" dev wgimg0; done
}

ping_hub() {
  for _ in $(seq 1 30); do
    if inns ping -c 1 -W 2 10.100.0.1 >/dev/null 2>&1; then
      inns ping -c 3 -W 2 10.100.0.1 | tail -n 2
      return 0
    fi
    sleep 1
  done
  fail "no ping reply from the hub 10.100.0.1 through the tunnel"
}

# ACPI power-off through QMP; waits for qemu to exit.
power_off() {
  python3 - "$tmp/qmp.sock" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", "system_powerdown"):
    f.write(json.dumps({"execute": cmd}) + "\n"); f.flush(); f.readline()
EOF
  local t0=$SECONDS
  while kill -0 "$qpid" 2>/dev/null; do
    [ $((SECONDS - t0)) -lt 300 ] || fail "the guest did not power off within 300 s"
    sleep 1
  done
  wait "$qpid" 2>/dev/null || true
  qpid=""
  ok "powered off in $((SECONDS - t0)) s"
}

# The first boot's checks and setup: the internal CA and the served certificate match the
# console, setup with the console's token, an API token in $auth, device "image-test"
# ($device_id) registered and its tunnel pinging the hub through wireguard-go.
first_setup() {
  step "TLS: the internal CA and the served certificate match the console"
  inns curl -sS --fail --max-time 30 -k --resolve localhost:443:127.0.0.1 \
    https://localhost/downloads/ca.crt -o "$tmp/ca.crt"
  got=$(openssl x509 -in "$tmp/ca.crt" -noout -fingerprint -sha256 | cut -d= -f2)
  [ "$got" = "$ca_fp" ] || fail "CA fingerprint $got, console says $ca_fp"
  served=$(inns openssl s_client -connect 127.0.0.1:443 -servername localhost </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 | cut -d= -f2)
  [ "$served" = "$leaf_fp" ] || fail "served certificate $served, console says $leaf_fp"
  api GET /healthz >/dev/null
  ok "CA and certificate match the console; /healthz answers over verified HTTPS"

  step "setup, admin sign-in, enrollment"
  password="image-test-$(openssl rand -hex 12)"
  api POST /api/setup "{\"setup_token\":\"$token\",\"admin_username\":\"admin\",\"admin_password\":\"$password\",\"endpoint\":\"127.0.0.1:51820\"}" >/dev/null
  ok "setup completed with the console's token"
  api POST /api/auth/login "{\"username\":\"admin\",\"password\":\"$password\"}" -c "$tmp/cookies" >/dev/null
  apitoken=$(api POST /api/tokens '{"name":"image-test"}' -b "$tmp/cookies" | json token)
  auth=(-H "Authorization: Bearer $apitoken")
  register image-test
  device_id=$(reg_field image-test device_id)
  ok "registered device $device_id: address $(reg_field image-test address)," \
    "endpoint $(reg_field image-test endpoint), allowed $(reg_field image-test allowed_ips)"

  step "wireguard-go in the namespace, ping the hub through the tunnel"
  WG_PROCESS_FOREGROUND=1 ip netns exec "$ns" wireguard-go -f wgimg0 >"$tmp/wireguard-go.log" 2>&1 &
  wgpid=$!
  for _ in $(seq 1 50); do inns wg show wgimg0 >/dev/null 2>&1 && break; sleep 0.1; done
  tunnel image-test
  ping_hub
  ok "ping 10.100.0.1 through the tunnel"
}
