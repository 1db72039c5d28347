#!/usr/bin/env bash
# Vault benchmarks against their peers, in one run (bench/RESULTS.md "Vault").
#   1. chunked format (bench/vault/vault_bench) vs `openssl speed -evp aes-256-gcm`, one core, same
#      chunk size (both report CPU-time throughput, so machine load matters less), REPS runs of
#      each, interleaved, reported as median [min..max];
#   2. file-to-file encryption and decryption of a SIZE_MIB file: vault_file (the object store's
#      PutFile/GetToFile, two threads) vs age (Debian package `age`, one thread), both allowed
#      both cores, REPS rounds interleaved, median [min..max] wall clock and CPU (user+sys).
# Usage: bench/vault/run.sh BUILD_DIR [SIZE_MIB]   Files go to $VAULT_BENCH_DIR (default /dev/shm);
# VAULT_BENCH_PARTS="format files" (default both) picks the parts; VAULT_BENCH_REPS (default 5).
set -euo pipefail
BUILD_DIR="${1:-build/release}"
SIZE_MIB="${2:-1024}"
REPS="${VAULT_BENCH_REPS:-5}"
DIR="${VAULT_BENCH_DIR:-/dev/shm}/vault-bench.$$"
mkdir -p "$DIR"
trap 'rm -rf "$DIR"' EXIT
command -v age >/dev/null || { echo "age not installed (tools/install-deps.sh)"; exit 1; }

# median [min..max] of the numbers on stdin
stats() { sort -g | awk '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2;
  printf "%.3f [%.3f..%.3f] n=%d", m, v[1], v[NR], NR}'; }

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
PARTS="${VAULT_BENCH_PARTS:-format files}"
if [[ " $PARTS " == *" format "* ]]; then
echo "== format: openssl speed vs vault_bench, CPU time, GiB/s (openssl's 1000s of B/s converted), $(openssl version)"
for rep in $(seq "$REPS"); do
  for b in 16384 65536 262144 1048576; do
    aead=$(taskset -c 0 openssl speed -aead -seconds 1 -bytes $b -evp aes-256-gcm 2>/dev/null | awk '/^AES-256-GCM/ {print $2}')
    echo "$aead" | awk '{printf "%.4f\n", $1 * 1000 / 1073741824}' >> "$DIR/openssl_aead_$b"
  done
  sha=$(taskset -c 0 openssl speed -seconds 1 -bytes 65536 -evp sha256 2>/dev/null | awk '/^sha256/ {print $2}')
  echo "$sha" | awk '{printf "%.4f\n", $1 * 1000 / 1073741824}' >> "$DIR/openssl_sha256"
  # One repetition of every vault benchmark; GiB/s per name.
  taskset -c 0 "$BUILD_DIR/bench/vault/vault_bench" --benchmark_min_time=0.5 --benchmark_format=csv 2>/dev/null |
    awk -F, '/^"BM_/ {gsub(/"/, "", $1); gsub(/[\/:]/, "_", $1); printf "%.4f\n", $(NF-4) / 1073741824 >> ("'"$DIR"'/" $1)}'
done
for f in "$DIR"/openssl_aead_* "$DIR"/openssl_sha256 "$DIR"/BM_*; do
  echo "$(basename "$f") $(stats < "$f") GiB/s"
done
for b in 16384 65536 262144 1048576; do
  o=$(stats < "$DIR/openssl_aead_$b" | cut -d' ' -f1)
  for bm in BM_EncryptHot BM_Encrypt BM_Decrypt; do
    f="$DIR/${bm}_chunk_${b}_sha256_0"
    [[ -f $f ]] || continue
    v=$(stats < "$f" | cut -d' ' -f1)
    echo "ratio ${bm} chunk=$b vs openssl -aead: $(awk -v v="$v" -v o="$o" 'BEGIN {printf "%.2fx", v / o}')"
  done
done
fi
if [[ " $PARTS " == *" files "* ]]; then
echo "== file to file, ${SIZE_MIB} MiB in $(dirname "$DIR"): median [min..max] of $REPS; wall s and user+sys CPU s; every tool may use both cores (taskset -c 0-1): age is single-threaded, vault_file runs ObjectStore::PutFile/GetToFile with its two-thread pipeline (_1t: pipeline off)"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$DIR/plain"
head -c 32 /dev/urandom > "$DIR/master.key"; chmod 600 "$DIR/master.key"
age-keygen -o "$DIR/age.key" 2>/dev/null
recipient=$(age-keygen -y "$DIR/age.key")
V="$BUILD_DIR/bench/vault/vault_file"
t() {  # appends "wall" to $1.wall and "user+sys" to $1.cpu
  local name=$1; shift
  /usr/bin/time -f '%e %U %S' -o "$DIR/time" taskset -c 0-1 "$@" 2>/dev/null >/dev/null
  awk '{printf "%.2f\n", $1}' "$DIR/time" >> "$DIR/$name.wall"
  awk '{printf "%.2f\n", $2 + $3}' "$DIR/time" >> "$DIR/$name.cpu"
}
# Each output is compared and deleted at once, so that at most four 1 GiB files sit in memory
# (tmpfs pages cannot be evicted without swap; more of them put the shared machine under memory
# pressure, and page allocation then costs whichever step runs next several times its CPU).
check() { cmp "$DIR/plain" "$1" || { echo "$1 differs"; exit 1; }; rm -f "$1"; }
for round in $(seq "$REPS"); do
  rm -rf "$DIR"/c.* "$DIR"/p.* "$DIR"/v.*
  t age_enc age -r "$recipient" -o "$DIR/c.age" "$DIR/plain"
  t vault_enc "$V" encrypt "$DIR/master.key" "$DIR/plain" "$DIR/v.2t"
  t vault_enc_1t "$V" --threads=1 encrypt "$DIR/master.key" "$DIR/plain" "$DIR/v.1t"
  rm -rf "$DIR/v.1t"
  t age_dec age -d -i "$DIR/age.key" -o "$DIR/p.age" "$DIR/c.age"; check "$DIR/p.age"
  t vault_dec "$V" decrypt "$DIR/master.key" "$DIR/v.2t" "$DIR/p.2t"; check "$DIR/p.2t"
  t vault_dec_1t "$V" --threads=1 decrypt "$DIR/master.key" "$DIR/v.2t" "$DIR/p.1t"; check "$DIR/p.1t"
  t vault_dec_rehash "$V" --rehash decrypt "$DIR/master.key" "$DIR/v.2t" "$DIR/p.rehash"; check "$DIR/p.rehash"
done
echo "round trips: identical"
for f in age_enc vault_enc vault_enc_1t age_dec vault_dec vault_dec_1t vault_dec_rehash; do
  wall=$(stats < "$DIR/$f.wall"); med=${wall%% *}
  echo "$f wall_s=$wall cpu_s=$(stats < "$DIR/$f.cpu") MiB_per_s(median wall)=$(awk -v s="$SIZE_MIB" -v w="$med" 'BEGIN {printf "%.0f", s / w}')"
done
for op in enc dec; do
  aw=$(stats < "$DIR/age_$op.wall" | cut -d' ' -f1); ac=$(stats < "$DIR/age_$op.cpu" | cut -d' ' -f1)
  for v in "$DIR"/vault_${op}*.wall; do
    v=$(basename "$v" .wall)
    vw=$(stats < "$DIR/$v.wall" | cut -d' ' -f1); vc=$(stats < "$DIR/$v.cpu" | cut -d' ' -f1)
    echo "ratio $v vs age: wall $(awk -v a="$aw" -v v="$vw" 'BEGIN {printf "%.2fx", a / v}') cpu $(awk -v a="$ac" -v v="$vc" 'BEGIN {printf "%.2fx", a / v}')"
  done
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
