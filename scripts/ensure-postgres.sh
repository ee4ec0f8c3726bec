#!/usr/bin/env bash
# ensure-postgres.sh — make sure the PostgreSQL that kreplay's tests and demo use is reachable.
#
# URL: $KREPLAY_TEST_DATABASE_URL, else $KREPLAY_DATABASE_URL, else
# postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable.
# If it is not reachable and it points at this machine, start a local server:
#   1. an existing Debian cluster (pg_ctlcluster), else
#   2. install Debian's postgresql package (as root, or with sudo), then start it,
# and allow passwordless (trust) connections from 127.0.0.1 for the postgres user, which is
# what the default URL expects. A remote URL is only checked, never touched.
set -euo pipefail

URL=${KREPLAY_TEST_DATABASE_URL:-${KREPLAY_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}}
hostport=${URL#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}; hostport=${hostport%%\?*}
HOST=${hostport%%:*}; PORT=5432
[[ $hostport == *:* ]] && PORT=${hostport##*:}
[[ -z $HOST ]] && HOST=127.0.0.1

say() { echo "ensure-postgres: $*" >&2; }
reachable() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }
accepts() { # the server answers queries for the URL's user (pg_isready only checks the port)
	if command -v psql >/dev/null; then psql "$URL" -qAtc 'SELECT 1' >/dev/null 2>&1; else reachable; fi
}
wait_up() { for _ in $(seq 1 60); do accepts && return 0; sleep 0.5; done; return 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

if accepts; then exit 0; fi
case $HOST in
127.0.0.1 | localhost | ::1) ;;
*)
	say "PostgreSQL at $HOST:$PORT is not reachable, and it is not local, so it is not started here."
	say "Check KREPLAY_TEST_DATABASE_URL / KREPLAY_DATABASE_URL ($URL)."
	exit 1
	;;
esac

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
	say "PostgreSQL is not installed; installing Debian's postgresql package"
	if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1; then
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null || {
			say "could not install postgresql (need root or passwordless sudo)."
			say "Install PostgreSQL 13+ yourself, or point KREPLAY_TEST_DATABASE_URL at a running server."
			exit 1
		}
	fi
fi

if command -v pg_lsclusters >/dev/null && [[ -n $(pg_lsclusters -h 2>/dev/null) ]]; then
	read -r ver name cport _ < <(pg_lsclusters -h | head -n 1)
	if [[ $cport != "$PORT" ]]; then
		say "the local cluster $ver/$name listens on port $cport, not $PORT; set KREPLAY_TEST_DATABASE_URL accordingly"
		exit 1
	fi
	say "starting PostgreSQL cluster $ver/$name"
	as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start 2>/dev/null || true
	if wait_up; then exit 0; fi
	hba=/etc/postgresql/$ver/$name/pg_hba.conf
	if reachable && [[ -f $hba ]] && ! grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
		# Up, but refusing the password-less default URL: allow it for this development server.
		say "allowing trust auth for postgres@127.0.0.1 in $hba (local development server)"
		as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba" || true
		as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload 2>/dev/null || true
	fi
	if wait_up; then exit 0; fi
fi

say "PostgreSQL is still not reachable at $HOST:$PORT."
say "Start it (e.g. pg_ctlcluster <version> main start) or set KREPLAY_TEST_DATABASE_URL."
exit 1
