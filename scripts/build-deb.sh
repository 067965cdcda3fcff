#!/bin/sh
# Builds target/debian/tcp-router_VERSION_ARCH.deb from BINARY with dpkg-deb, from a tree staged
# by scripts/install.sh: scripts/build-deb.sh BINARY
#
# A static BINARY (`make static`) needs nothing; a dynamic one gets the Depends dpkg-shlibdeps
# finds. The maintainer scripts enable and start tcp-router.service through deb-systemd-helper
# and deb-systemd-invoke, and do nothing of the kind where those tools or a booted systemd are
# missing (a container, a chroot): the package installs and removes cleanly there too.
# The Maintainer field is Cargo.toml's first author, the project's role name, with a role address
# on the reserved .invalid domain (RFC 2606): the project has no public mail address yet, and a
# package should not name whoever happened to build it. DEB_MAINTAINER overrides it.
set -eu
umask 022
cd "$(dirname "$0")/.."

bin=${1:?usage: scripts/build-deb.sh BINARY}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
author=$(sed -n 's/^authors = \["\([^"<]*\)".*$/\1/p' Cargo.toml | head -n 1)
maintainer=${DEB_MAINTAINER:-${author:?Cargo.toml has no authors} <noreply@tcp-router.invalid>}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
out=target/debian
stage=$out/stage
deb=$out/tcp-router_${version}_${arch}.deb
doc=$stage/usr/share/doc/tcp-router

rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
DESTDIR=$stage PREFIX=/usr UNITDIR=/lib/systemd/system scripts/install.sh "$bin" >/dev/null
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/tcp-router"

depends=
if ldd "$stage/usr/bin/tcp-router" >/dev/null 2>&1; then
	# Dynamic: dpkg-shlibdeps wants a debian/control to read; give it a minimal one.
	shlibs=$(mktemp -d)
	mkdir "$shlibs/debian"
	printf 'Source: tcp-router\n\nPackage: tcp-router\nArchitecture: any\n' >"$shlibs/debian/control"
	binary=$(pwd)/$stage/usr/bin/tcp-router
	depends=$(cd "$shlibs" && dpkg-shlibdeps -O "$binary" | sed -n 's/^shlibs:Depends=//p')
	rm -rf "$shlibs"
	echo "build-deb.sh: $bin is dynamically linked: Depends: $depends"
fi

cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tcp-router

Files: *
Copyright: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) ${author}
License: MIT or Apache-2.0

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 THE SOFTWARE.

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License");
 you may not use this file except in compliance with the License.
 You may obtain a copy of the License at
 .
 http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS,
 WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 See the License for the specific language governing permissions and
 limitations under the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0,
 can be found in "/usr/share/common-licenses/Apache-2.0".
EOF

{
	printf 'tcp-router (%s) unstable; urgency=medium\n\n' "$version"
	printf '  * Built from %s with scripts/build-deb.sh.\n\n' "$(git describe --always --dirty 2>/dev/null || echo 'the source tree')"
	printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/copyright" "$doc/changelog.gz"

if [ -z "$depends" ]; then
	# Static on purpose: one binary that runs on any x86-64 Linux, with no dependency.
	install -d "$stage/usr/share/lintian/overrides"
	echo 'tcp-router: statically-linked-binary [usr/bin/tcp-router]' \
		>"$stage/usr/share/lintian/overrides/tcp-router"
	chmod 0644 "$stage/usr/share/lintian/overrides/tcp-router"
fi

cat >"$stage/DEBIAN/conffiles" <<'EOF'
/etc/tcp-router/tcp-router.conf
EOF

# The systemd snippets debhelper (dh_installsystemd) would write, each step guarded.
cat >"$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
case "$1" in
configure | abort-upgrade | abort-deconfigure | abort-remove)
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		deb-systemd-helper unmask tcp-router.service >/dev/null || true
		if deb-systemd-helper --quiet was-enabled tcp-router.service; then
			deb-systemd-helper enable tcp-router.service >/dev/null || true
		else
			deb-systemd-helper update-state tcp-router.service >/dev/null || true
		fi
	fi
	if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if command -v deb-systemd-invoke >/dev/null 2>&1; then
			if [ -n "${2:-}" ]; then action=restart; else action=start; fi
			deb-systemd-invoke "$action" tcp-router.service >/dev/null || true
		fi
	fi
	;;
esac
exit 0
EOF

cat >"$stage/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ] &&
	command -v deb-systemd-invoke >/dev/null 2>&1; then
	deb-systemd-invoke stop tcp-router.socket tcp-router.service >/dev/null || true
fi
exit 0
EOF

cat >"$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if command -v deb-systemd-helper >/dev/null 2>&1; then
	case "$1" in
	remove) deb-systemd-helper mask tcp-router.service >/dev/null || true ;;
	purge)
		deb-systemd-helper purge tcp-router.service >/dev/null || true
		deb-systemd-helper unmask tcp-router.service >/dev/null || true
		;;
	esac
fi
if [ "$1" = purge ]; then
	# The log directories of tcp-router.service and of every tcp-router@NAME (LogsDirectory=).
	rm -rf /var/log/tcp-router /var/log/private/tcp-router \
		/var/log/tcp-router-* /var/log/private/tcp-router-*
fi
exit 0
EOF
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

(cd "$stage" && find usr lib -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"

{
	echo "Package: tcp-router"
	echo "Version: $version"
	echo "Architecture: $arch"
	echo "Maintainer: $maintainer"
	echo "Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
	[ -z "$depends" ] || echo "Depends: $depends"
	echo "Section: net"
	echo "Priority: optional"
	echo "Description: TCP forwarder and router, a drop-in for rinetd"
	echo " tcp-router accepts TCP connections and relays them, byte for byte, to"
	echo " upstreams. It reads rinetd's configuration file as it is, and adds"
	echo " failover between upstreams, per-route timeouts and limits, routing by"
	echo " TLS server name (SNI), HTTP Host or ALPN without decrypting anything,"
	echo " the PROXY protocol, a graceful drain on stop, reloads that never cut"
	echo " connections, and an admin endpoint with Prometheus metrics."
	echo " ."
	echo " The package ships a sandboxed systemd service with readiness"
	echo " notification and optional socket activation, and one service per"
	echo " configuration file (tcp-router@NAME)."
} >"$stage/DEBIAN/control"

find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
