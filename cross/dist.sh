#!/usr/bin/env bash
# cross/dist.sh: pack one release tarball per target, with a sha256sum line beside it.
#
#   cross/dist.sh DIST_DIR VERSION TRIPLE=RELEASE_DIR...
#
# For each TRIPLE writes DIST_DIR/wsgate-VERSION-TRIPLE.tar.gz holding one folder of the same
# name: the binaries named in $WSGATE_BINS that exist in RELEASE_DIR (wsgate is required),
# README.md, and the EC2 kit from cross/ (wsgate.service, sysctl-wsgate.conf, user-data.sh,
# DEPLOY.md). Beside it, DIST_DIR/wsgate-VERSION-TRIPLE.tar.gz.sha256 in `sha256sum` format,
# so `sha256sum -c` works from DIST_DIR. The archive is reproducible: sorted names, root owner,
# and every mtime set to $SOURCE_DATE_EPOCH (default: the last commit's time).
# Run from the repository root (cross/cross.mk does).
set -euo pipefail

[ $# -ge 3 ] || { echo "usage: $0 DIST_DIR VERSION TRIPLE=RELEASE_DIR..." >&2; exit 2; }
dist_dir=$1 version=$2
shift 2
bins=${WSGATE_BINS:-wsgate wsgate-load}
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

mkdir -p "$dist_dir"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

for pair in "$@"; do
  triple=${pair%%=*} release_dir=${pair#*=}
  name=wsgate-$version-$triple
  dir=$stage/$name
  mkdir -p "$dir" && chmod 0755 "$dir"

  [ -f "$release_dir/wsgate" ] || { echo "dist: $release_dir/wsgate is missing" >&2; exit 1; }
  for bin in $bins; do
    if [ -f "$release_dir/$bin" ]; then
      install -m 0755 "$release_dir/$bin" "$dir/$bin"
    fi
  done
  if [ -f README.md ]; then
    install -m 0644 README.md "$dir/README.md"
  else
    echo "dist: warning: no top-level README.md to pack" >&2
  fi
  # The reference the README links to, beside it.
  if [ -d docs ]; then
    install -d "$dir/docs"
    install -m 0644 docs/*.md "$dir/docs/"
  fi
  install -m 0644 cross/README.md "$dir/DEPLOY.md"
  install -m 0644 cross/wsgate.service cross/sysctl-wsgate.conf cross/wsgate.env "$dir/"
  install -m 0755 cross/user-data.sh "$dir/user-data.sh"

  tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@$epoch" -cf - "$name" | gzip -9n >"$dist_dir/$name.tar.gz"
  (cd "$dist_dir" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
  echo "dist: $dist_dir/$name.tar.gz ($(stat -c %s "$dist_dir/$name.tar.gz") bytes)"
  echo "dist: $dist_dir/$name.tar.gz.sha256 $(cut -d' ' -f1 "$dist_dir/$name.tar.gz.sha256")"
done
