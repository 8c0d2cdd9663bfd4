#!/usr/bin/env bash
# cross/pkg.sh: a .deb and an .rpm of wsgate for one architecture, from a built binary.
#
#   cross/pkg.sh ARCH BINARY OUTDIR [VERSION]      ARCH: aarch64 or x86_64
#
# `make deb` and `make rpm` run it for both static musl builds (cross/cross.mk); the tests run
# it on the debug binary too (tests/deploy.rs). Uses Debian's dpkg-deb and rpmbuild (package
# `rpm`), the well-kept tools of the two formats; nothing is downloaded.
#
# What both packages hold and do:
#   /usr/bin/wsgate                           the binary
#   /usr/lib/systemd/system/wsgate.service    cross/wsgate.service, run from /usr/bin
#   /usr/lib/sysctl.d/60-wsgate.conf          cross/sysctl-wsgate.conf
#   /etc/wsgate/wsgate.env                    the flags; a conffile, kept on upgrade
#   install: the `wsgate` system user, the sysctls applied, the service enabled and started
#   upgrade: `systemctl try-restart wsgate`, a graceful restart: the old process drains
#            (clients get Close 1001 and reconnect) before the new one starts
#   removal: the service stopped and disabled (the user and the env file stay until purge)
set -euo pipefail

arch=${1:?usage: cross/pkg.sh ARCH BINARY OUTDIR [VERSION]}
bin=${2:?binary}
out=${3:?output directory}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=${4:-$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml")}

case "$arch" in
  aarch64) deb_arch=arm64 ;;
  x86_64) deb_arch=amd64 ;;
  *) echo "pkg: unknown architecture $arch (aarch64 or x86_64)" >&2; exit 2 ;;
esac
[ -x "$bin" ] || { echo "pkg: $bin is not an executable" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The tree both packages install.
stage() {
  local d=$1
  install -D -m 0755 "$bin" "$d/usr/bin/wsgate"
  install -D -m 0644 "$root/cross/sysctl-wsgate.conf" "$d/usr/lib/sysctl.d/60-wsgate.conf"
  install -D -m 0644 "$root/cross/wsgate.env" "$d/etc/wsgate/wsgate.env"
  install -d "$d/usr/lib/systemd/system"
  sed 's#/usr/local/bin/wsgate#/usr/bin/wsgate#g' "$root/cross/wsgate.service" \
    >"$d/usr/lib/systemd/system/wsgate.service"
  chmod 0644 "$d/usr/lib/systemd/system/wsgate.service"
}

# Shell snippets both formats' scripts share. systemctl only where systemd runs (not in a
# container build or a chroot).
add_user='getent passwd wsgate >/dev/null || useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin wsgate'
on_install='if [ -d /run/systemd/system ]; then sysctl -q -p /usr/lib/sysctl.d/60-wsgate.conf || true; systemctl daemon-reload; systemctl enable --now wsgate.service || true; fi'
on_upgrade='if [ -d /run/systemd/system ]; then systemctl daemon-reload; systemctl try-restart wsgate.service || true; fi'
on_remove='if [ -d /run/systemd/system ]; then systemctl disable --now wsgate.service || true; fi'

# --- deb ---
d=$work/deb
stage "$d"
install -d "$d/DEBIAN"
size=$(du -sk "$d" | cut -f1)
cat >"$d/DEBIAN/control" <<EOF
Package: wsgate
Version: $version
Architecture: $deb_arch
Maintainer: wsgate developers <wsgate@localhost>
Installed-Size: $size
Section: net
Priority: optional
Homepage: https://github.com/wsgate/wsgate
Description: WebSocket gateway for AWS Classic and Network Load Balancers
 One static binary that replaces nginx and a Node Socket.IO chat app behind a
 load balancer: PROXY protocol v1/v2, WebSocket and Socket.IO rooms, recovery.
EOF
echo /etc/wsgate/wsgate.env >"$d/DEBIAN/conffiles"
cat >"$d/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
  $add_user
  if [ -z "\$2" ]; then
    $on_install
  else
    $on_upgrade
  fi
fi
EOF
cat >"$d/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = remove ]; then
  $on_remove
fi
EOF
cat >"$d/DEBIAN/postrm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = purge ]; then
  userdel wsgate 2>/dev/null || true
  rm -rf /etc/wsgate
fi
EOF
chmod 0755 "$d/DEBIAN/postinst" "$d/DEBIAN/prerm" "$d/DEBIAN/postrm"
deb=$out/wsgate_${version}_${deb_arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$d" "$deb" >/dev/null
echo "pkg: $deb"

# --- rpm ---
r=$work/rpm
mkdir -p "$r"/{BUILD,RPMS,SOURCES,SPECS,SRPMS,tree}
stage "$r/tree"
cat >"$r/SPECS/wsgate.spec" <<EOF
Name: wsgate
Version: $version
Release: 1
Summary: WebSocket gateway for AWS Classic and Network Load Balancers
License: MIT OR Apache-2.0
URL: https://github.com/wsgate/wsgate
# A static binary: nothing to strip, no debug package, no automatic dependencies.
%global debug_package %{nil}
%global __os_install_post %{nil}
%global _build_id_links none
AutoReqProv: no
Requires(pre): shadow-utils

%description
One static binary that replaces nginx and a Node Socket.IO chat app behind a load
balancer: PROXY protocol v1/v2, WebSocket and Socket.IO rooms, recovery.

%install
cp -a $r/tree/. %{buildroot}/

%pre
$add_user

%post
if [ \$1 -eq 1 ]; then
  $on_install
fi

%preun
if [ \$1 -eq 0 ]; then
  $on_remove
fi

%postun
if [ \$1 -ge 1 ]; then
  $on_upgrade
fi

%files
%attr(0755,root,root) /usr/bin/wsgate
%attr(0644,root,root) /usr/lib/systemd/system/wsgate.service
%attr(0644,root,root) /usr/lib/sysctl.d/60-wsgate.conf
%dir /etc/wsgate
%config(noreplace) %attr(0644,root,root) /etc/wsgate/wsgate.env
EOF
rpmbuild --quiet -bb --target "$arch-linux" --define "_topdir $r" \
  --define "_rpmdir $r/RPMS" "$r/SPECS/wsgate.spec" >/dev/null
rpm=$(find "$r/RPMS" -name '*.rpm' | head -1)
cp "$rpm" "$out/"
echo "pkg: $out/$(basename "$rpm")"
