#!/usr/bin/env bash
# GPU machine check of MIG instance create/destroy through our NVML backend (src/gpu/nvml.cc,
# `gpuwarden agent mig`), against `nvidia-smi mig -lgi`:
#   1. picks the first GPU whose MIG mode is ALREADY enabled (this script never changes MIG mode;
#      with none it prints "MIG disabled, skipped" and exits 0);
#   2. finds a free memory slice for a 1g profile (19) in our own listing;
#   3. creates a 1g GPU instance + compute instance there with `gpuwarden agent mig create`;
#   4. checks `nvidia-smi mig -lgi` now lists a GPU instance with the same GI id, profile id and
#      placement start, and `nvidia-smi -L` the new MIG UUID;
#   5. destroys it with `gpuwarden agent mig destroy` and checks nvidia-smi no longer lists it.
# Needs root (MIG instance management is privileged) and a GPU with no other user of that slice.
# Usage: tests/gpu/mig_check.sh [BUILD_DIR]   (default build/release)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${1:-$ROOT/build/release}"
command -v nvidia-smi >/dev/null || { echo "mig_check: nvidia-smi not found; run this on a GPU machine" >&2; exit 2; }
command -v python3 >/dev/null || { echo "mig_check: python3 is needed" >&2; exit 2; }
BIN="$BUILD/gpuwarden"
if ! "$BIN" --version >/dev/null 2>&1; then
  echo "mig_check: building gpuwarden in $BUILD"
  (cd "$ROOT" && cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWARDEN_BENCH=OFF >/dev/null &&
     cmake --build "$BUILD" --target gpuwarden -j "$(nproc)")
fi
TMP="$(mktemp -d)"
CREATED=""
GPU=""
cleanup() {
  # Never leave our instance behind, whatever failed.
  if [ -n "$CREATED" ]; then "$BIN" agent mig destroy --gpu "$GPU" --uuid "$CREATED" >/dev/null 2>&1 || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

"$BIN" agent mig ls >"$TMP/ls.json" 2>"$TMP/ls.err" || { cat "$TMP/ls.err" >&2; exit 1; }
read -r GPU INDEX START < <(python3 - "$TMP/ls.json" <<'PY'
import json, sys
for g in json.load(open(sys.argv[1])):
    if not g["mig_enabled"]:
        continue
    used = set()
    for i in g["instances"]:
        size = {19: 1, 20: 1, 15: 2, 14: 2, 9: 4, 5: 4, 0: 8}.get(i["profile_id"], 8)
        used.update(range(i["start"], i["start"] + size))
    free = [s for s in range(7) if s not in used]
    if free:
        print(g["uuid"], g["index"], free[0])
        sys.exit(0)
print("- - -")
PY
)
if [ "$GPU" = "-" ]; then
  if python3 -c 'import json,sys; sys.exit(0 if any(g["mig_enabled"] for g in json.load(open(sys.argv[1]))) else 1)' "$TMP/ls.json"; then
    echo "mig_check: every MIG GPU is full (no free 1g slice); nothing created"; exit 1
  fi
  echo "MIG disabled, skipped"; exit 0
fi
echo "mig_check: GPU $GPU (index $INDEX), creating 1g (profile 19) at slice $START"
"$BIN" agent mig create --gpu "$GPU" --profile 19 --start "$START" >"$TMP/create.json"
cat "$TMP/create.json"
CREATED="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["uuid"])' "$TMP/create.json")"
nvidia-smi mig -lgi -i "$INDEX" >"$TMP/lgi.txt"
nvidia-smi -L >"$TMP/L.txt"
python3 - "$TMP/create.json" "$TMP/lgi.txt" "$TMP/L.txt" <<'PY'
import json, re, sys
ours = json.load(open(sys.argv[1]))
lgi = open(sys.argv[2]).read()
listing = open(sys.argv[3]).read()
fail = 0
def check(what, ok, detail):
    global fail
    fail += 0 if ok else 1
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")
# Rows: |   0  MIG 1g.10gb          19        7          0:1     |
rows = re.findall(r"\|\s*(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+):(\d+)\s*\|", lgi)
match = [r for r in rows if int(r[3]) == ours["gpu_instance_id"]]
check("nvidia-smi lists the GPU instance id", len(match) == 1, f"gi {ours['gpu_instance_id']} in {rows}")
if match:
    gpu, name, pid, gi, start, size = match[0]
    check("profile id", int(pid) == ours["profile_id"], f"ours {ours['profile_id']} smi {pid}")
    check("profile name", name == ours["profile_name"], f"ours {ours['profile_name']} smi {name}")
    check("placement start", int(start) == ours["start"], f"ours {ours['start']} smi {start}")
    check("placement size", int(size) == 1, f"smi {size}")
check("nvidia-smi -L lists the MIG UUID", ours["uuid"] in listing, ours["uuid"])
sys.exit(1 if fail else 0)
PY
"$BIN" agent mig destroy --gpu "$GPU" --uuid "$CREATED"
GONE="$CREATED"; CREATED=""
nvidia-smi -L >"$TMP/L2.txt"
if grep -q "$GONE" "$TMP/L2.txt"; then echo "FAIL destroyed instance $GONE still listed"; exit 1; fi
echo "ok   destroyed $GONE; nvidia-smi no longer lists it"
echo "mig_check: passed"
