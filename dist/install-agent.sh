#!/bin/sh
# Installs the Watchgrid agent from a hub: the hub's own `watchgrid` binary, the systemd
# unit `watchgrid-agent.service`, an enrollment with the hub, and the running service.
#
#   sh install-agent.sh --server https://HUB --token TOKEN --fingerprint SHA256:AA:BB:...
#                       [--allow-commands] [--no-start]
#
# Nothing is trusted but the fingerprint given here: the hub's CA certificate is fetched
# without verification, checked against the fingerprint, and every later download (the
# binary, its checksum, the unit) is verified against that CA. A fingerprint mismatch
# stops the script before anything is installed.
#
# For tests, these override where things go (the defaults are the real paths):
#   WATCHGRID_PREFIX      (/usr/local)            the binary goes to PREFIX/bin/watchgrid
#   WATCHGRID_UNIT_DIR    (/etc/systemd/system)   the unit goes there
#   WATCHGRID_STATE_DIR   (/var/lib/watchgrid-agent)
#   WATCHGRID_SKIP_ENROLL=1  stop before `watchgrid agent enroll`
# --no-start also skips creating the system user and every systemctl call.
set -eu
umask 077

me=install-agent
die() {
	printf '%s: %s\n' "$me" "$*" >&2
	exit 1
}
say() { printf '%s: %s\n' "$me" "$*"; }

usage() {
	cat <<'EOF'
usage: sh install-agent.sh --server https://HUB --token TOKEN --fingerprint SHA256:AA:BB:...
                           [--allow-commands] [--no-start]

  --server URL         the hub's HTTPS URL
  --token TOKEN        an enrollment token (dashboard or POST /api/enrollment-tokens);
                       or set WATCHGRID_TOKEN, which other users cannot see in `ps`
  --fingerprint FP     SHA-256 of the hub's internal CA, as `watchgrid serve` prints it
                       (colons and case do not matter; an "SHA256:" prefix is allowed)
  --allow-commands     let the hub run commands on this machine, as the unprivileged
                       user watchgrid-agent inside the service's sandbox
  --no-start           install and enroll only: no user, no systemctl
EOF
}

server=
token=${WATCHGRID_TOKEN:-}
fingerprint=
allow_commands=
no_start=
# A flag's value: the next argument, which must exist.
need() { [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
	case $1 in
	--server) need "$1" $#; server=$2; shift 2 ;;
	--server=*) server=${1#*=}; shift ;;
	--token) need "$1" $#; token=$2; shift 2 ;;
	--token=*) token=${1#*=}; shift ;;
	--fingerprint) need "$1" $#; fingerprint=$2; shift 2 ;;
	--fingerprint=*) fingerprint=${1#*=}; shift ;;
	--allow-commands) allow_commands=1; shift ;;
	--no-start) no_start=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done
[ -n "$server" ] || die "--server is required (see --help)"
[ -n "$token" ] || die "--token (or WATCHGRID_TOKEN) is required (see --help)"
[ -n "$fingerprint" ] || die "--fingerprint is required (see --help)"

[ "$(id -u)" -eq 0 ] || die "run this as root: it installs a binary, a systemd unit and a system user"

case $server in
https://*) ;;
*) die "--server must be an https:// URL, not: $server" ;;
esac
server=${server%/}
# Only what https://HOST[:PORT] holds (IPv6 in brackets): the URL is handed to the agent
# and printed, and a path or a stray quote has no business there.
case ${server#https://} in
*[!]A-Za-z0-9.:[-]* | '') die "--server: not a plain https://HOST[:PORT] URL: $server" ;;
esac
case $token in
*[!A-Za-z0-9_-]*) die "--token: not an enrollment token" ;;
esac

# The fingerprint as 64 lowercase hex digits, whatever form it was given in.
want=$(printf '%s' "$fingerprint" | sed 's/^[Ss][Hh][Aa]-\{0,1\}256://' | tr -d ':' | tr 'ABCDEF' 'abcdef')
case $want in
*[!0-9a-f]* | '') die "--fingerprint: not a SHA-256 fingerprint: $fingerprint" ;;
esac
[ ${#want} -eq 64 ] || die "--fingerprint: a SHA-256 fingerprint has 64 hex digits: $fingerprint"
# What `watchgrid serve` prints and `watchgrid agent enroll --ca-fingerprint` reads.
fp_banner=$(printf '%s' "$want" | tr 'abcdef' 'ABCDEF' | sed 's/\(..\)/\1:/g; s/:$//')

prefix=${WATCHGRID_PREFIX:-/usr/local}
unit_dir=${WATCHGRID_UNIT_DIR:-/etc/systemd/system}
state_dir=${WATCHGRID_STATE_DIR:-/var/lib/watchgrid-agent}
# These paths are written into the unit by sed: absolute, and no character sed or systemd
# would read as syntax.
for p in "$prefix" "$unit_dir" "$state_dir"; do
	case $p in
	/*) ;;
	*) die "not an absolute path: $p" ;;
	esac
	case $p in
	*[!A-Za-z0-9._/-]*) die "only letters, digits and ._-/ in install paths: $p" ;;
	esac
done
bin="$prefix/bin/watchgrid"
unit="$unit_dir/watchgrid-agent.service"

# Scratch space, and any half-written file in a target directory, go on every exit.
work=$(mktemp -d)
partial=
cleanup() {
	rm -rf "$work"
	[ -z "$partial" ] || rm -f "$partial"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# fetch URL FILE [CAFILE]: without CAFILE the server is not verified (the CA itself only).
fetch() {
	if command -v curl >/dev/null 2>&1; then
		if [ $# -ge 3 ]; then
			curl -fsS --proto '=https' --connect-timeout 20 --cacert "$3" -o "$2" "$1"
		else
			curl -fsSk --proto '=https' --connect-timeout 20 -o "$2" "$1"
		fi
	elif command -v wget >/dev/null 2>&1; then
		if [ $# -ge 3 ]; then
			wget -q --https-only --timeout=20 --ca-certificate="$3" -O "$2" "$1"
		else
			wget -q --https-only --timeout=20 --no-check-certificate -O "$2" "$1"
		fi
	else
		die "needs curl or wget"
	fi || die "downloading $1 failed"
}

# sha256 FILE: the lowercase hex digest.
sha256() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum <"$1" | cut -c1-64
	elif command -v openssl >/dev/null 2>&1; then
		openssl dgst -sha256 -r <"$1" | cut -c1-64
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 <"$1" | cut -c1-64
	else
		die "needs sha256sum, openssl or shasum"
	fi
}

b64decode() {
	if command -v base64 >/dev/null 2>&1; then
		base64 -d
	elif command -v openssl >/dev/null 2>&1; then
		openssl base64 -d
	else
		die "needs base64 or openssl"
	fi
}

# Every tool before the first download, so a missing one is not mistaken for a bad hub.
command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1 || die "needs curl or wget"
command -v sha256sum >/dev/null 2>&1 || command -v openssl >/dev/null 2>&1 ||
	command -v shasum >/dev/null 2>&1 || die "needs sha256sum, openssl or shasum"
command -v base64 >/dev/null 2>&1 || command -v openssl >/dev/null 2>&1 ||
	die "needs base64 or openssl"

# 1. The CA, pinned by the fingerprint. Exactly one PEM block, so the file that later
#    verifies the downloads holds nothing but the certificate that was hashed.
fetch "$server/downloads/ca.crt" "$work/ca.crt"
blocks=$(grep -c '^-----BEGIN ' "$work/ca.crt" || true)
certs=$(grep -c '^-----BEGIN CERTIFICATE-----$' "$work/ca.crt" || true)
ends=$(grep -c '^-----END CERTIFICATE-----$' "$work/ca.crt" || true)
if [ "$blocks" != 1 ] || [ "$certs" != 1 ] || [ "$ends" != 1 ]; then
	die "$server/downloads/ca.crt is not one PEM certificate; nothing installed"
fi
sed -n '/^-----BEGIN CERTIFICATE-----$/,/^-----END CERTIFICATE-----$/p' "$work/ca.crt" |
	sed '/^-----/d' | b64decode >"$work/ca.der" ||
	die "$server/downloads/ca.crt is not valid PEM; nothing installed"
got=$(sha256 "$work/ca.der")
if [ "$got" != "$want" ]; then
	got_banner=$(printf '%s' "$got" | tr 'abcdef' 'ABCDEF' | sed 's/\(..\)/\1:/g; s/:$//')
	die "CA fingerprint mismatch: $server serves a CA with SHA-256 $got_banner, expected $fp_banner. Nothing installed. Check the fingerprint on the hub's console or dashboard, and that you reach the right hub."
fi
say "hub CA verified (SHA-256 $fp_banner)"

# 2. The binary, its checksum and the unit, over TLS verified against that CA.
fetch "$server/downloads/watchgrid" "$work/watchgrid" "$work/ca.crt"
fetch "$server/downloads/watchgrid.sha256" "$work/watchgrid.sha256" "$work/ca.crt"
fetch "$server/downloads/watchgrid-agent.service" "$work/unit" "$work/ca.crt"
sum=$(sha256 "$work/watchgrid")
[ "$(cut -c1-64 "$work/watchgrid.sha256")" = "$sum" ] ||
	die "the downloaded binary does not match the hub's checksum; nothing installed"
# Paths other than the defaults (tests) go into the unit too.
sed -e "s|^ExecStart=/usr/local/bin/watchgrid |ExecStart=$bin |" \
	-e "s|--state-dir /var/lib/watchgrid-agent\$|--state-dir $state_dir|" \
	"$work/unit" >"$work/unit.new"
if [ "$state_dir" != /var/lib/watchgrid-agent ]; then
	printf '[Service]\nReadWritePaths=%s\n' "$state_dir" >>"$work/unit.new"
fi

# install_file SRC DEST MODE: a temporary file next to DEST, renamed over it, so DEST is
# either the old file or the whole new one (and a running agent keeps its old binary).
install_file() {
	dir=$(dirname "$2")
	mkdir -p "$dir"
	partial="$dir/.$(basename "$2").new.$$"
	cp "$1" "$partial"
	chmod "$3" "$partial"
	mv -f "$partial" "$2"
	partial=
}

# 3. Install.
install_file "$work/watchgrid" "$bin" 0755
say "installed $bin (sha256 $sum)"
install_file "$work/unit.new" "$unit" 0644
say "installed $unit"

if [ -z "$no_start" ]; then
	if ! id -u watchgrid-agent >/dev/null 2>&1; then
		if command -v useradd >/dev/null 2>&1; then
			useradd --system --user-group --no-create-home --home-dir /nonexistent \
				--shell /usr/sbin/nologin --comment "Watchgrid agent" watchgrid-agent
		elif command -v systemd-sysusers >/dev/null 2>&1; then
			printf 'u watchgrid-agent - "Watchgrid agent" /nonexistent /usr/sbin/nologin\n' |
				systemd-sysusers -
		else
			die "needs useradd or systemd-sysusers to create the user watchgrid-agent"
		fi
		say "created the system user watchgrid-agent"
	fi
fi

mkdir -p "$state_dir"
chmod 0700 "$state_dir"

# 4. Enroll: the agent pins the same CA, registers with the token and keeps its keys in
#    the state directory.
if [ "${WATCHGRID_SKIP_ENROLL:-}" = 1 ]; then
	say "WATCHGRID_SKIP_ENROLL=1: not enrolling"
	exit 0
fi
if "$bin" agent status --state-dir "$state_dir" >/dev/null 2>&1; then
	# A reinstall (a newer binary from the hub): the enrollment stands, the token is unused.
	say "$state_dir is already enrolled; keeping it (to enroll again: stop the agent, remove $state_dir, run this again)"
else
	set -- agent enroll --server "$server" --ca-fingerprint "$fp_banner" --state-dir "$state_dir"
	[ -z "$allow_commands" ] || set -- "$@" --allow-commands
	# The token through the environment: arguments are visible to every user in `ps`.
	WATCHGRID_TOKEN=$token "$bin" "$@" || die "enrollment failed: $bin agent enroll (the binary and unit stay installed; run this script again with a new token)"
	say "enrolled with $server"
fi

if [ -n "$no_start" ]; then
	say "--no-start: not starting; as root: systemctl daemon-reload && systemctl enable --now watchgrid-agent"
	exit 0
fi

# 5. Start. The enrollment ran as root; the service runs as watchgrid-agent.
chown -R watchgrid-agent:watchgrid-agent "$state_dir"
systemctl daemon-reload
systemctl enable watchgrid-agent.service
# restart, not start: a reinstall replaces the binary of an agent that is running.
systemctl restart watchgrid-agent.service
say "watchgrid-agent is running: systemctl status watchgrid-agent, $bin agent status"
