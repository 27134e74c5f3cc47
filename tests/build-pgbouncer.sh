#!/usr/bin/env bash
# Build PgBouncer from Debian's source archive into PREFIX (make pgbouncer-tracking): the suite's
# second PgBouncer, one that tracks prepared statements (1.21 and later) as compose.yaml's and
# the Kubernetes manifests' do, which Debian 12's own package (1.18) cannot.
# Usage: tests/build-pgbouncer.sh VERSION SHA256 PREFIX
set -euo pipefail
version=$1 sha256=$2 prefix=$3
tarball="pgbouncer_${version}.orig.tar.gz"
url="https://deb.debian.org/debian/pool/main/p/pgbouncer/${tarball}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "Building PgBouncer ${version} from Debian's source (${url})..."
curl --fail --silent --show-error --location --retry 3 --output "$work/$tarball" "$url" || {
  echo "Could not download ${url}: if Debian no longer carries ${version}, bump"
  echo "PGBOUNCER_TRACKING_VERSION and its checksum in the Makefile (any 1.21 or later does)."
  exit 1
}
echo "${sha256}  $work/$tarball" | sha256sum --check --quiet
tar -xzf "$work/$tarball" -C "$work"
cd "$work/pgbouncer-${version}"
rm -rf "$prefix"
./configure --prefix="$prefix" --without-cares --without-pam --without-systemd >/dev/null
make -j"$(nproc)" >/dev/null
make install >/dev/null
"$prefix/bin/pgbouncer" --version | head -1
touch "$prefix/built"  # last: an interrupted build is built again, not half used
