#!/usr/bin/env bash
# Build PgBouncer from Debian's source archive into PREFIX (make pgbouncer-tracking): the suite's
# second PgBouncer, one that tracks prepared statements (1.21 and later) as compose.yaml's and
# the Kubernetes manifests' do, which Debian 12's own package (1.18) cannot.
# Usage: tests/build-pgbouncer.sh VERSION SHA256 PREFIX
set -euo pipefail
version=$1 sha256=$2 prefix=$3
tarball="pgbouncer_${version}.orig.tar.gz"
# Where apt reaches it (deb.debian.org, over http in sources.list), over https when http is not
# let through: the checksum the file must match, pinned in the Makefile, vouches for it.
path="deb.debian.org/debian/pool/main/p/pgbouncer/${tarball}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "Building PgBouncer ${version} from Debian's source (${path})..."
for scheme in http https; do
  if curl --fail --silent --show-error --location --retry 2 --output "$work/$tarball" \
    "${scheme}://${path}"; then
    break
  fi
  rm -f "$work/$tarball"
done
if [ ! -f "$work/$tarball" ]; then
  echo "Could not download ${path}: if Debian no longer carries ${version}, bump"
  echo "PGBOUNCER_TRACKING_VERSION and its checksum in the Makefile (any 1.21 or later does)."
  exit 1
fi
echo "${sha256}  $work/$tarball" | sha256sum --check --quiet
tar -xzf "$work/$tarball" -C "$work"
cd "$work/pgbouncer-${version}"
rm -rf "$prefix"
./configure --prefix="$prefix" --without-cares --without-pam --without-systemd >/dev/null
make -j"$(nproc)" >/dev/null
make install >/dev/null
"$prefix/bin/pgbouncer" --version | head -1
touch "$prefix/built"  # last: an interrupted build is built again, not half used
