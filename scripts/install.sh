#!/bin/sh
# Installs tcp-router: scripts/install.sh BINARY
#
#   $DESTDIR$PREFIX/bin/tcp-router                        the binary
#   $DESTDIR$PREFIX/share/man/man8/tcp-router.8.gz        the manual pages, gzipped
#   $DESTDIR$PREFIX/share/man/man5/tcp-router.conf.5.gz
#   $DESTDIR$UNITDIR/tcp-router{.service,.socket,@.service}  ExecStart= pointing at the binary
#   $DESTDIR$PREFIX/share/doc/tcp-router/                 the example file, the systemd notes
#   $DESTDIR/etc/tcp-router/tcp-router.conf               only if there is none: the example,
#                                                         every directive commented out
#
# PREFIX defaults to /usr/local, UNITDIR to $PREFIX/lib/systemd/system (which systemd searches
# for /usr/local and, on merged-/usr systems, is /lib/systemd/system for /usr). The configuration
# is always under /etc, where the units look for it. `make install` and scripts/build-deb.sh use
# this script, so the package and a hand install hold the same files.
set -eu
umask 022

bin=${1:?usage: scripts/install.sh BINARY}
root=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
doc=$DESTDIR$PREFIX/share/doc/tcp-router
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

install -D -m 0755 "$bin" "$DESTDIR$PREFIX/bin/tcp-router"

for page in tcp-router.8 tcp-router.conf.5; do
	section=${page##*.}
	gzip -9n <"$root/man/$page" >"$work/$page.gz"
	install -D -m 0644 "$work/$page.gz" "$DESTDIR$PREFIX/share/man/man$section/$page.gz"
done

for unit in tcp-router.service tcp-router.socket tcp-router@.service; do
	sed "s|/usr/bin/tcp-router|$PREFIX/bin/tcp-router|g" "$root/deploy/systemd/$unit" >"$work/$unit"
	install -D -m 0644 "$work/$unit" "$DESTDIR$UNITDIR/$unit"
done

install -D -m 0644 "$root/examples/tcp-router.conf" "$doc/examples/tcp-router.conf"
install -D -m 0644 "$root/deploy/systemd/README.md" "$doc/README.systemd.md"

# The installed configuration forwards nothing until edited, as rinetd's does, so the service
# starts cleanly right after installation. The example's paths are those of the sandboxed
# unit: only /var/log/tcp-router is writable, and systemd needs no pid file.
conf=$DESTDIR/etc/tcp-router/tcp-router.conf
if [ -e "$conf" ]; then
	echo "install.sh: $conf exists; left as it is"
else
	{
		cat <<-EOF
		# /etc/tcp-router/tcp-router.conf: what tcp-router.service forwards; see tcp-router.conf(5).
		#
		# Nothing is forwarded until you add rules. Below is the commented example
		# ($PREFIX/share/doc/tcp-router/examples/tcp-router.conf): uncomment and adapt what you need,
		# check with \`tcp-router --check -c /etc/tcp-router/tcp-router.conf\`, then
		# \`systemctl reload tcp-router\`. An existing rinetd.conf works here as it is.
		#
		# Under the packaged unit the file system is read-only but for /var/log/tcp-router, so
		# a logfile goes there; pidlogfile is not needed (systemd knows the process).
		#
		EOF
		sed -e 's|^\([^#[:space:]]\)|#\1|' \
			"$root/examples/tcp-router.conf"
	} >"$work/tcp-router.conf"
	install -D -m 0644 "$work/tcp-router.conf" "$conf"
fi
