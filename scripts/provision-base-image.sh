#!/usr/bin/env bash
# Make sure debian:bookworm-slim exists locally: pull it, or, where no registry answers, build it
# with debootstrap and `docker import` so the project's Dockerfiles build unchanged.
set -euo pipefail
image=${DSW_BASE_IMAGE:-debian:bookworm-slim}
mirror=${DSW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${DSW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dsw}
tarball="$cache/bookworm-minbase.tar"

say() { printf '[provision:image] %s\n' "$*"; }

if docker image inspect "$image" >/dev/null 2>&1; then
  say "$image present"
  exit 0
fi
if timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
  say "pulled $image"
  exit 0
fi
say "$image cannot be pulled; building it with debootstrap"
if [ ! -s "$tarball" ]; then
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  mkdir -p "$cache"
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  say "debootstrap --variant=minbase bookworm from $mirror (about a minute)"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
  # Trim like the official slim image: no apt lists or caches in the base.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  # mktemp made / mode 0700: non-root containers could not reach anything on storage drivers
  # that do not mask it (vfs).
  chmod 0755 "$root"
  tar -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
  say "cached the root filesystem at $tarball"
fi
docker import -c 'CMD ["bash"]' "$tarball" "$image" >/dev/null
say "imported $image"
