#!/usr/bin/env bash
# Builds a small busybox-static root filesystem and an OCI image layout of it, for the runtime's
# tests, demo and benchmarks.
#
#   tools/build-busybox-rootfs.sh DIR [--add FILE]... [--env NAME=VALUE]...
#
# DIR/rootfs  the root filesystem (busybox applets in /bin, an /etc/passwd with the job user 1000,
#             empty mount points /proc /dev /sys /tmp /scratch /data)
# DIR/oci     an OCI image layout of it: one gzip layer, a config with the --env entries, a
#             manifest and index.json, all sha256-addressed
# --add FILE  copies FILE into /bin of the rootfs (e.g. a static test helper)
# Needs busybox-static (apt-get install busybox-static) or BUSYBOX=/path/to/static/busybox, tar,
# gzip, sha256sum.
set -euo pipefail

die() { echo "build-busybox-rootfs: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: $0 DIR [--add FILE]... [--env NAME=VALUE]..."
DIR="$1"; shift
ADD=(); ENVS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --add) [ $# -ge 2 ] || die "--add needs a file"; ADD+=("$2"); shift 2 ;;
    --env) [ $# -ge 2 ] || die "--env needs NAME=VALUE"; ENVS+=("$2"); shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done

BUSYBOX="${BUSYBOX:-}"
[ -z "$BUSYBOX" ] || [ -x "$BUSYBOX" ] || die "BUSYBOX=$BUSYBOX is not executable"
for c in /bin/busybox /usr/bin/busybox; do
  [ -z "$BUSYBOX" ] || break
  if [ -x "$c" ] && file -L "$c" 2>/dev/null | grep -q 'statically linked'; then BUSYBOX="$c"; break; fi
  if [ -x "$c" ] && ! ldd "$c" >/dev/null 2>&1; then BUSYBOX="$c"; break; fi
done
[ -n "$BUSYBOX" ] || die "no static busybox found (apt-get install busybox-static)"

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
R="$DIR/rootfs"
rm -rf "$R" "$DIR/oci"
mkdir -p "$R"/{bin,etc,proc,dev,sys,tmp,scratch,data,root,home/job}
cp "$BUSYBOX" "$R/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$R/bin/$applet"
done
for f in "${ADD[@]}"; do cp "$f" "$R/bin/"; done
cat >"$R/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/bin/sh
job:x:1000:1000:job:/home/job:/bin/sh
nobody:x:65534:65534:nobody:/:/bin/false
PASSWD
printf 'root:x:0:\njob:x:1000:\nnogroup:x:65534:\n' >"$R/etc/group"
chmod 1777 "$R/tmp"
chmod 755 "$DIR" "$R"

# OCI layout
O="$DIR/oci"
mkdir -p "$O/blobs/sha256"
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$R" -cf "$DIR/layer.tar" .
diff_id="$(sha256sum "$DIR/layer.tar" | cut -d' ' -f1)"
gzip -n -c "$DIR/layer.tar" >"$DIR/layer.tar.gz"
layer="$(sha256sum "$DIR/layer.tar.gz" | cut -d' ' -f1)"
layer_size="$(stat -c %s "$DIR/layer.tar.gz")"
mv "$DIR/layer.tar.gz" "$O/blobs/sha256/$layer"
rm -f "$DIR/layer.tar"

env_json='"PATH=/bin"'
for e in "${ENVS[@]}"; do env_json="$env_json,\"$e\""; done
printf '{"architecture":"amd64","os":"linux","config":{"Env":[%s],"Cmd":["/bin/sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$env_json" "$diff_id" >"$DIR/config.json"
config="$(sha256sum "$DIR/config.json" | cut -d' ' -f1)"
config_size="$(stat -c %s "$DIR/config.json")"
mv "$DIR/config.json" "$O/blobs/sha256/$config"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$config" "$config_size" "$layer" "$layer_size" >"$DIR/manifest.json"
manifest="$(sha256sum "$DIR/manifest.json" | cut -d' ' -f1)"
manifest_size="$(stat -c %s "$DIR/manifest.json")"
mv "$DIR/manifest.json" "$O/blobs/sha256/$manifest"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"}}]}' \
  "$manifest" "$manifest_size" >"$O/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$O/oci-layout"
echo "sha256:$manifest"
