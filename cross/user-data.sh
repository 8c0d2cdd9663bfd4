#!/bin/bash
# user-data.sh: EC2 user data that installs and starts wsgate on first boot (cloud-init runs it
# once, as root). Works on Graviton (aarch64) and x86_64 instances of any systemd Linux, e.g.
# Amazon Linux 2023. Paste it as the instance's or launch template's user data after setting
# WSGATE_URL below. Its output lands in /var/log/cloud-init-output.log.
#
# It fetches the release tarball that `make dist` made for this machine's architecture, checks
# its sha256, then installs:
#   /usr/local/bin/wsgate                  the static binary
#   /etc/systemd/system/wsgate.service     the unit (runs as user wsgate, binds :80)
#   /etc/sysctl.d/60-wsgate.conf           kernel settings for many connections
#   /etc/wsgate/wsgate.env                 the flags (WSGATE_FLAGS), unless one is there already
# and creates the system user `wsgate`, applies the sysctls and enables the service --now.
set -euo pipefail

# Where `make dist` output was uploaded: an s3:// prefix (needs the AWS CLI, present on Amazon
# Linux 2023, and an instance role allowed s3:GetObject on it), or an https:// or file:// prefix.
WSGATE_URL=${WSGATE_URL:-s3://YOUR-BUCKET/wsgate}
WSGATE_VERSION=${WSGATE_VERSION:-0.1.0}
# For trying the script out: install under this directory instead of /, and skip the user,
# sysctl and systemctl steps.
DESTDIR=${DESTDIR:-}

case "$(uname -m)" in
  aarch64 | arm64) triple=aarch64-unknown-linux-musl ;;
  x86_64 | amd64) triple=x86_64-unknown-linux-musl ;;
  *)
    echo "wsgate: no build for architecture $(uname -m)" >&2
    exit 1
    ;;
esac
name=wsgate-$WSGATE_VERSION-$triple

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch URL FILE
fetch() {
  case "$1" in
    s3://*) aws s3 cp --only-show-errors "$1" "$2" ;;
    *) curl -fsSL --retry 5 -o "$2" "$1" ;;
  esac
}
fetch "$WSGATE_URL/$name.tar.gz" "$work/$name.tar.gz"
fetch "$WSGATE_URL/$name.tar.gz.sha256" "$work/$name.tar.gz.sha256"
(cd "$work" && sha256sum --check --quiet "$name.tar.gz.sha256")
tar -C "$work" -xzf "$work/$name.tar.gz"
src=$work/$name

install -D -m 0755 "$src/wsgate" "$DESTDIR/usr/local/bin/wsgate"
install -D -m 0644 "$src/wsgate.service" "$DESTDIR/etc/systemd/system/wsgate.service"
install -D -m 0644 "$src/sysctl-wsgate.conf" "$DESTDIR/etc/sysctl.d/60-wsgate.conf"
# The flags: one written before this script ran (the CloudFormation stack does) is kept.
if [ ! -e "$DESTDIR/etc/wsgate/wsgate.env" ]; then
  install -D -m 0644 "$src/wsgate.env" "$DESTDIR/etc/wsgate/wsgate.env"
fi
if [ -n "$DESTDIR" ]; then
  echo "wsgate: installed $name under $DESTDIR (user, sysctl and systemd steps skipped)"
  exit 0
fi

# A system user with no home and no shell; the unit grants it CAP_NET_BIND_SERVICE only.
if ! id -u wsgate >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin wsgate
fi
sysctl -q -p /etc/sysctl.d/60-wsgate.conf
systemctl daemon-reload
systemctl enable --now wsgate.service
echo "wsgate: $name installed and started; logs: journalctl -u wsgate"
