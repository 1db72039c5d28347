#!/usr/bin/env bash
# Vault benchmarks against their peers, on one core, in one run (bench/RESULTS.md "Vault").
#   1. chunked format (bench/vault/vault_bench) vs `openssl speed -evp aes-256-gcm` at the same
#      chunk size (both report CPU-time throughput, so machine load matters less);
#   2. 1 GiB file-to-file encryption and decryption: vault_file vs age (Debian package `age`).
# Usage: bench/vault/run.sh BUILD_DIR [SIZE_MIB]   Files go to $VAULT_BENCH_DIR (default /dev/shm);
# VAULT_BENCH_PARTS="format files" (default both) picks the parts.
set -euo pipefail
BUILD_DIR="${1:-build/release}"
SIZE_MIB="${2:-1024}"
DIR="${VAULT_BENCH_DIR:-/dev/shm}/vault-bench.$$"
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT
command -v age >/dev/null || { echo "age not installed (tools/install-deps.sh)"; exit 1; }

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
PARTS="${VAULT_BENCH_PARTS:-format files}"
if [[ " $PARTS " == *" format "* ]]; then
echo "== openssl speed (CPU time), $(openssl version)"
for b in 16384 65536 262144 1048576; do
  plain=$(taskset -c 0 openssl speed -seconds 3 -bytes $b -evp aes-256-gcm 2>/dev/null | awk '/^AES-256-GCM/ {print $2}')
  aead=$(taskset -c 0 openssl speed -aead -seconds 3 -bytes $b -evp aes-256-gcm 2>/dev/null | awk '/^AES-256-GCM/ {print $2}')
  echo "openssl_speed bytes=$b plain=${plain} aead=${aead} (1000s of bytes/s)"
done
echo "== vault_bench (CPU time)"
taskset -c 0 "$BUILD_DIR/bench/vault/vault_bench" --benchmark_min_time=1 2>/dev/null | grep '^BM_'

fi
if [[ " $PARTS " == *" files "* ]]; then
echo "== file to file, ${SIZE_MIB} MiB (best of 3 wall-clock; user+sys CPU alongside)"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$DIR/plain"
head -c 32 /dev/urandom > "$DIR/master.key"; chmod 600 "$DIR/master.key"
age-keygen -o "$DIR/age.key" 2>/dev/null
recipient=$(age-keygen -y "$DIR/age.key")
t() {  # prints "wall user+sys" of one run
  /usr/bin/time -f '%e %U %S' -o "$DIR/time" taskset -c 0 "$@" 2>/dev/null >/dev/null
  awk '{printf "%.2f %.2f\n", $1, $2 + $3}' "$DIR/time"
}
best() { sort -n | head -1; }
for round in 1 2 3; do
  t age -r "$recipient" -o "$DIR/c.age" "$DIR/plain" >> "$DIR/age_enc"
  t "$BUILD_DIR/bench/vault/vault_file" encrypt "$DIR/master.key" "$DIR/plain" "$DIR/c.gwv" >> "$DIR/v_enc"
  t age -d -i "$DIR/age.key" -o "$DIR/p.age" "$DIR/c.age" >> "$DIR/age_dec"
  t "$BUILD_DIR/bench/vault/vault_file" decrypt "$DIR/master.key" "$DIR/c.gwv" "$DIR/p.gwv" >> "$DIR/v_dec"
  t "$BUILD_DIR/bench/vault/vault_file" --no-sha256 encrypt "$DIR/master.key" "$DIR/plain" "$DIR/c2.gwv" >> "$DIR/v_enc_nohash"
  t "$BUILD_DIR/bench/vault/vault_file" --no-sha256 decrypt "$DIR/master.key" "$DIR/c2.gwv" "$DIR/p2.gwv" >> "$DIR/v_dec_nohash"
done
cmp "$DIR/plain" "$DIR/p2.gwv" || { echo "no-sha256 round trip differs"; exit 1; }
cmp "$DIR/plain" "$DIR/p.gwv" && cmp "$DIR/plain" "$DIR/p.age" && echo "round trips: identical"
for f in age_enc v_enc v_enc_nohash age_dec v_dec v_dec_nohash; do
  read -r wall cpu < <(best < "$DIR/$f")
  mbs=$(awk -v s="$SIZE_MIB" -v w="$wall" 'BEGIN {printf "%.0f", s / w}')
  echo "$f wall_s=$wall cpu_s=$cpu MiB_per_s=$mbs  (all: $(tr '\n' ' ' < "$DIR/$f"))"
done
fi
