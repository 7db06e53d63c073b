#!/usr/bin/env bash
# Builds the Agora image (default tag agora:local) from binaries built on this machine, without
# pulling anything: no base image, no registry. The image is FROM scratch and holds
#
#   /usr/local/bin/{master,agent,svcframework,batchframework,everywhere}   (those that are built)
#   the shared libraries they link against (found with ldd), the dynamic loader included
#   /bin/busybox from Debian's busybox-static, with its applets (sh, wget, ps, ...) for debugging
#   /var/lib/agora/{master,agent,svc,batch} and /tmp
#
# Usage:
#   cargo build --release -p agora-master -p agora-agent -p agora-svc -p agora-batch \
#     -p agora-example-everywhere
#   deploy/docker/build-image.sh                       # -> agora:local
#   deploy/docker/build-image.sh --tag agora:dev --bin-dir target/debug
#   deploy/docker/build-image.sh --context-only /tmp/ctx   # assemble the context, build nothing
#
# master and agent are required; the other binaries are included when present (a note is
# printed for each one that is missing). With a registry at hand, deploy/docker/Dockerfile is
# the conventional multi-stage alternative.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin_dir=$target_dir/release
tag=agora:local
context_only=""
busybox=${AGORA_BUSYBOX:-/bin/busybox}
strip_binaries=1

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  echo
  cat <<'EOF'
Options:
  --bin-dir DIR        where the built binaries are (default: $CARGO_TARGET_DIR/release or target/release)
  --tag TAG            image tag (default: agora:local)
  --busybox PATH       static busybox to include (default: /bin/busybox, or $AGORA_BUSYBOX)
  --no-strip           keep the debug information (line tables) of the binaries; by default it
                       is stripped (symbols stay, so backtraces keep function names): a release
                       image is about 50 MB instead of 240 MB
  --context-only DIR   assemble the build context in DIR (created, must be empty) and stop
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --busybox) busybox=${2:?--busybox needs a path}; shift 2 ;;
    --strip) strip_binaries=1; shift ;;
    --no-strip) strip_binaries=0; shift ;;
    --context-only) context_only=${2:?--context-only needs a directory}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

required=(master agent)
optional=(svcframework batchframework everywhere)

for binary in "${required[@]}"; do
  if [ ! -x "$bin_dir/$binary" ]; then
    echo "build-image.sh: $bin_dir/$binary is missing; build it first:" >&2
    echo "  cargo build --release -p agora-master -p agora-agent" >&2
    exit 1
  fi
done
if [ ! -x "$busybox" ]; then
  echo "build-image.sh: $busybox is missing (Debian: apt-get install busybox-static)" >&2
  exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
  echo "build-image.sh: $busybox is dynamically linked; the image needs a static one (busybox-static)" >&2
  exit 1
fi

if [ -n "$context_only" ]; then
  mkdir -p "$context_only"
  if [ -n "$(ls -A "$context_only")" ]; then
    echo "build-image.sh: --context-only $context_only is not empty" >&2
    exit 2
  fi
  context=$(cd "$context_only" && pwd)
else
  context=$(mktemp -d "${TMPDIR:-/tmp}/agora-image.XXXXXX")
  trap 'rm -rf "$context"' EXIT
fi
rootfs=$context/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" \
  "$rootfs/var/lib/agora/master" "$rootfs/var/lib/agora/agent" \
  "$rootfs/var/lib/agora/svc" "$rootfs/var/lib/agora/batch"
chmod 1777 "$rootfs/tmp"

# Copies a file to the same absolute path under the rootfs, following symlinks (the loader
# looks libraries up by the name ldd printed, so the real content goes under that name).
copy_to_rootfs() {
  local source=$1
  mkdir -p "$rootfs$(dirname "$source")"
  cp -L "$source" "$rootfs$source"
}

included=()
libraries=()
for binary in "${required[@]}" "${optional[@]}"; do
  if [ ! -x "$bin_dir/$binary" ]; then
    echo "note: $bin_dir/$binary is not built; the image will not contain it"
    continue
  fi
  cp "$bin_dir/$binary" "$rootfs/usr/local/bin/$binary"
  if [ "$strip_binaries" = 1 ]; then
    strip --strip-debug "$rootfs/usr/local/bin/$binary"
  fi
  included+=("$binary")
  # Absolute paths in ldd's output: "libc.so.6 => /lib/.../libc.so.6 (0x…)" and the loader
  # "/lib64/ld-linux-x86-64.so.2 (0x…)"; linux-vdso has no file.
  while read -r library; do
    libraries+=("$library")
  done < <(ldd "$bin_dir/$binary" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }')
done
for library in $(printf '%s\n' "${libraries[@]}" | sort -u); do
  copy_to_rootfs "$library"
done

cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done

# Enough of /etc for name resolution and tools that look up users.
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
  > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
cat > "$context/Dockerfile" <<EOF
# Generated by deploy/docker/build-image.sh: binaries built on the host, nothing pulled.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/bin
WORKDIR /var/lib/agora
LABEL org.opencontainers.image.title="agora" \\
      org.opencontainers.image.version="${version:-dev}" \\
      org.opencontainers.image.description="Agora master, agent and frameworks (${included[*]})"
CMD ["master", "--help"]
EOF

echo "binaries: ${included[*]}"
echo "libraries: $(printf '%s\n' "${libraries[@]}" | sort -u | tr '\n' ' ')"
if [ -n "$context_only" ]; then
  echo "context assembled in $context"
  exit 0
fi
# The legacy builder needs no buildx plugin and handles a FROM scratch build offline (its
# deprecation notice is only shown when the build fails).
if ! output=$(DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$context" 2>&1); then
  echo "$output" >&2
  echo "build-image.sh: docker build failed" >&2
  exit 1
fi
echo "built $tag"
