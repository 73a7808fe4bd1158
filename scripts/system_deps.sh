#!/usr/bin/env bash
# The Debian packages the fleet tests (tests/fleet) run for real: PostgreSQL's server (initdb,
# postgres) and HAProxy. Installs the missing ones as root, or with passwordless sudo; quiet and
# quick when they are there. Without a way to install, says what is missing and exits 0: those
# tests then skip with the same advice.
set -euo pipefail

missing=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    || [ -x "$(pg_config --bindir 2>/dev/null)/initdb" ] || missing+=(postgresql)
PATH="$PATH:/usr/sbin" command -v haproxy >/dev/null || missing+=(haproxy)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "toolgate: the fleet tests need ${missing[*]}, not installed (no root or passwordless" \
         "sudo here to install them): run \`sudo scripts/system_deps.sh\` (or \`sudo apt-get" \
         "install --no-install-recommends ${missing[*]}\`); until then they are skipped." >&2
    exit 0
fi

install() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1
}
echo "toolgate: installing ${missing[*]} for the fleet tests (apt-get)" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A fresh machine has no package lists yet: fetch them only when the install needs them.
if ! install; then
    "${as_root[@]}" apt-get update -qq >"$log" 2>&1 && install || {
        cat "$log" >&2
        echo "toolgate: could not install ${missing[*]} (apt-get's output above)" >&2
        exit 1
    }
fi
