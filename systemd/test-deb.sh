#!/usr/bin/env bash
# Builds the .deb with cargo-deb and proves it on this machine with dpkg: it installs (binary,
# unit, sysctl file, config, docs, system user, state directory), the installed unit verifies,
# the installed binary runs as the service user with the packaged config, an upgrade keeps a
# locally edited config and the data, and remove/purge leave what they should.
#
# It installs into THIS system, so it runs only as root and only in CI (CI=true) or when asked
# (ARQONBUS_DEB_TEST_INSTALL=1), and refuses if arqonbus is already installed. Whatever it
# creates (package, user, /var/lib/arqonbus) it removes on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CI:-}" != "true" ] && [ "${ARQONBUS_DEB_TEST_INSTALL:-}" != "1" ]; then
  echo "test-deb.sh installs a package into this system; run it in CI or set ARQONBUS_DEB_TEST_INSTALL=1" >&2
  exit 2
fi
if [ "$(id -u)" != 0 ]; then
  echo "test-deb.sh needs root (dpkg -i)" >&2
  exit 2
fi
if dpkg-query -W -f='${Status}' arqonbus 2>/dev/null | grep -q "installed\|config-files"; then
  echo "arqonbus is already installed here; not touching it" >&2
  exit 2
fi

had_user=0; getent passwd arqonbus >/dev/null && had_user=1
had_state=0; [ -e /var/lib/arqonbus ] && had_state=1
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  dpkg -P arqonbus >/dev/null 2>&1 || true
  [ "$had_user" = 0 ] && { userdel arqonbus 2>/dev/null || true; groupdel arqonbus 2>/dev/null || true; }
  [ "$had_state" = 0 ] && rm -rf /var/lib/arqonbus
  true
}
trap cleanup EXIT

passed=0
check() { # check "what" command...
  local what=$1; shift
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $what" >&2
    echo "$passed passed, 1 failed"
    exit 1
  fi
}
mode_owner() { stat -c '%a %U:%G' "$1"; }

echo "== cargo-deb"
if ! command -v cargo-deb >/dev/null 2>&1; then
  timeout 1200 cargo install cargo-deb --locked
fi
timeout 1800 cargo deb -p arqonbus
version=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print([p for p in json.load(sys.stdin)["packages"] if p["name"]=="arqonbus"][0]["version"])')
arch=$(dpkg --print-architecture)
deb="target/debian/arqonbus_${version}-1_${arch}.deb"
check "the package was built at $deb" test -f "$deb"

echo "== install"
dpkg -i "$deb"
check "dpkg says installed" sh -c "dpkg-query -W -f='\${Status}' arqonbus | grep -qx 'install ok installed'"
check "binary runs" sh -c "/usr/bin/arqonbus --version | grep -q '$version'"
check "unit installed as written" cmp /usr/lib/systemd/system/arqonbus.service systemd/arqonbus.service
check "config installed" cmp /etc/arqonbus/arqonbus.toml systemd/arqonbus.toml
check "config is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' arqonbus | grep -q /etc/arqonbus/arqonbus.toml"
check "sysctl file installed" cmp /usr/lib/sysctl.d/99-arqonbus.conf kernel-tuning/99-arqonbus.conf
check "docs installed" test -f /usr/share/doc/arqonbus/kernel-tuning.md -a -f /usr/share/doc/arqonbus/README.md
check "system user" sh -c "getent passwd arqonbus | grep -q ':/var/lib/arqonbus:/usr/sbin/nologin$'"
uid=$(id -u arqonbus)
check "system uid ($uid)" test "$uid" -lt 1000
check "state directory" test "$(mode_owner /var/lib/arqonbus)" = "750 arqonbus:arqonbus"
check "config readable by the service only" test "$(mode_owner /etc/arqonbus/arqonbus.toml)" = "640 root:arqonbus"
check "packaged config is valid" /usr/bin/arqonbus config --check /etc/arqonbus/arqonbus.toml
check "unit enabled" test -L /etc/systemd/system/multi-user.target.wants/arqonbus.service
if command -v systemd-analyze >/dev/null 2>&1; then
  out=$(systemd-analyze verify --man=no /usr/lib/systemd/system/arqonbus.service 2>&1 || echo "exit $?")
  check "installed unit verifies: $out" test -z "$out"
fi

echo "== the installed binary serves as its user with the packaged config"
log=$(mktemp)
# Ports are overridden: 4720/4721 may be taken on a shared machine.
(cd /var/lib/arqonbus && exec setpriv --reuid arqonbus --regid arqonbus --init-groups \
  /usr/bin/arqonbus serve --config /etc/arqonbus/arqonbus.toml \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 1) >"$log" 2>&1 &
server_pid=$!
admin=""
for _ in $(seq 1 300); do
  admin=$(sed -n 's/.*admin endpoint up.*addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)
  grep -q "arqonbus listening" "$log" && [ -n "$admin" ] && break
  sleep 0.1
done
check "server started as arqonbus: $(cat "$log")" grep -q "arqonbus listening" "$log"
readyz=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://$admin/readyz', timeout=5).read().decode().strip())")
check "readyz says ready ($readyz)" test "$readyz" = ready
kill -TERM "$server_pid"
wait "$server_pid"
check "server exited 0 on SIGTERM" test $? = 0
server_pid=""

echo "== upgrade"
echo "# edited by the operator" >>/etc/arqonbus/arqonbus.toml
echo "keep me" >/var/lib/arqonbus/data-marker
timeout 600 cargo deb -p arqonbus --no-build --deb-version "${version}-2"
dpkg -i "target/debian/arqonbus_${version}-2_${arch}.deb"
check "upgraded" sh -c "dpkg-query -W -f='\${Version}' arqonbus | grep -qx '${version}-2'"
check "edited config kept" grep -q "edited by the operator" /etc/arqonbus/arqonbus.toml
check "data kept" test -f /var/lib/arqonbus/data-marker
check "same user" test "$(id -u arqonbus)" = "$uid"

echo "== remove and purge"
dpkg -r arqonbus
check "binary removed" test ! -e /usr/bin/arqonbus
check "unit removed" test ! -e /usr/lib/systemd/system/arqonbus.service
check "config kept by remove" test -f /etc/arqonbus/arqonbus.toml
dpkg -P arqonbus
check "config removed by purge" test ! -e /etc/arqonbus
check "data kept by purge" test -f /var/lib/arqonbus/data-marker
check "package gone" sh -c "! dpkg-query -W arqonbus >/dev/null 2>&1 || dpkg-query -W -f='\${Status}' arqonbus | grep -q not-installed"

echo "deb: $passed passed, 0 failed"
