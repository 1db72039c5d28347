# Shared preamble of the bench/*/run.sh scripts that compare against an npm peer.
# Source it after `set -euo pipefail`; it sets `here` (the calling script's directory), `root` (the
# repository) and `tmp` (a scratch directory removed on exit).
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
root=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# need_npm PACKAGE: exits 2 with the install command when tools/node lacks the package.
need_npm() {
  if [ ! -d "$root/tools/node/node_modules/$1" ]; then
    echo "run.sh: missing npm $1; run: cd tools/node && npm install" >&2
    exit 2
  fi
}

# machine_line: "== machine: N CPUs, MODEL, load A B C" for the results table.
machine_line() {
  echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
}
