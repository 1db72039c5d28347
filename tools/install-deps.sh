#!/usr/bin/env bash
# Installs everything gpuwarden needs to build, test and run its demo on Debian 12.
# Idempotent: does nothing (quickly) when all is present. Run as root or with sudo.
set -euo pipefail

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config clang libclang-rt-14-dev
  clang-format clang-tidy
  libssl-dev libboost-dev libboost-system-dev libabsl-dev nlohmann-json3-dev libyaml-cpp-dev
  libspdlog-dev libfmt-dev libcli11-dev libsqlite3-dev libpq-dev libcurl4-openssl-dev
  libargon2-dev liboath-dev libqrencode-dev libseccomp-dev libcap-dev libapt-pkg-dev libzstd-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  postgresql openssl curl wrk nginx oathtool sqlite3
  age
  rsyslog rsyslog-gnutls
  runc crun bubblewrap busybox-static zlib1g-dev
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Node.js: some machines ship it (with npm) outside Debian's packages; only add Debian's when the
# commands are missing, since Debian's npm conflicts with those builds.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node packages used only by tests and benchmarks (peers), pinned in tools/node/package.json.
here="$(cd "$(dirname "$0")" && pwd)"
if [ -f "$here/node/package.json" ]; then
  if [ ! -d "$here/node/node_modules" ] || [ "$here/node/package.json" -nt "$here/node/node_modules/.stamp" ]; then
    echo "install-deps: npm install in tools/node"
    (cd "$here/node" && npm install --no-audit --no-fund --loglevel=error >/dev/null && touch node_modules/.stamp)
  fi
fi
