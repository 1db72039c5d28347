#!/usr/bin/env bash
# GPU machine check of the NVML backend (src/gpu/nvml.cc): builds gpuwarden if needed, dumps the
# node inventory through NVML (`gpuwarden agent --inventory --gpus nvml`) and compares it, GPU by
# GPU (matched by UUID) and field by field, with `nvidia-smi -q -x`:
#   count of GPUs, uuid, product_name, memory_mib (fb_memory_usage/total), driver_version,
#   cuda_version, ecc_enabled (ecc_mode/current_ecc), mig_capable and mig_enabled
#   (mig_mode/current_mig; N/A = not capable), number of MIG devices (and their UUIDs against
#   `nvidia-smi -L` when MIG is on), and that the dump's model names the known model when the
#   product is one of ours.
# Prints one line per compared field and exits non-zero on the first run with any mismatch.
# Usage: tests/gpu/nvml_inventory.sh [BUILD_DIR]   (default build/release)
# Read-only on the GPU: it never changes MIG mode or resets anything.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${1:-$ROOT/build/release}"
command -v nvidia-smi >/dev/null || { echo "nvml_inventory: nvidia-smi not found; run this on a GPU machine" >&2; exit 2; }
command -v python3 >/dev/null || { echo "nvml_inventory: python3 is needed for the comparison" >&2; exit 2; }

BIN="$BUILD/gpuwarden"
if ! "$BIN" --version >/dev/null 2>&1; then
  echo "nvml_inventory: building gpuwarden in $BUILD"
  (cd "$ROOT" && cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWARDEN_BENCH=OFF >/dev/null &&
     cmake --build "$BUILD" --target gpuwarden -j "$(nproc)")
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$BIN" agent --inventory --gpus nvml >"$TMP/inventory.json" 2>"$TMP/agent.log"
if grep -q "NVML unavailable" "$TMP/agent.log"; then
  echo "nvml_inventory: the NVML backend did not load:" >&2; cat "$TMP/agent.log" >&2; exit 1
fi
nvidia-smi -q -x >"$TMP/smi.xml"
nvidia-smi -L >"$TMP/smi-L.txt"

python3 - "$TMP/inventory.json" "$TMP/smi.xml" "$TMP/smi-L.txt" <<'PY'
import json, re, sys
import xml.etree.ElementTree as ET

inv = json.load(open(sys.argv[1]))
root = ET.parse(sys.argv[2]).getroot()
listing = open(sys.argv[3]).read()
known = {"NVIDIA H100 80GB HBM3": "H100-80GB", "NVIDIA H200": "H200-141GB",
         "NVIDIA A100-SXM4-40GB": "A100-40GB", "NVIDIA A100-SXM4-80GB": "A100-80GB",
         "NVIDIA L40S": "L40S-48GB"}
failures = 0

def check(gpu, field, ours, theirs):
    global failures
    ok = ours == theirs
    failures += 0 if ok else 1
    print(f"{'ok  ' if ok else 'FAIL'} {gpu} {field}: nvml={ours!r} nvidia-smi={theirs!r}")

def text(node, path, default=""):
    el = node.find(path)
    return el.text.strip() if el is not None and el.text is not None else default

smi_gpus = root.findall("gpu")
check("-", "gpu count", len(inv["gpus"]), len(smi_gpus))
check("-", "gpu_backend", inv["gpu_backend"], "nvml")
driver = text(root, "driver_version")
cuda = text(root, "cuda_version")
ours_by_uuid = {g["uuid"]: g for g in inv["gpus"]}
check("-", "indexes", sorted(g["index"] for g in inv["gpus"]), list(range(len(inv["gpus"]))))
for s in smi_gpus:
    uuid = text(s, "uuid")
    g = ours_by_uuid.get(uuid)
    if g is None:
        print(f"FAIL {uuid}: nvidia-smi lists it, the NVML inventory does not")
        failures += 1
        continue
    product = text(s, "product_name")
    check(uuid, "product_name", g["product_name"], product)
    if product in known:
        check(uuid, "model", g["model"], known[product])
    total = text(s, "fb_memory_usage/total")
    m = re.match(r"(\d+)\s*MiB", total)
    check(uuid, "memory_mib", g["memory_mib"], int(m.group(1)) if m else total)
    check(uuid, "driver_version", g["driver_version"], driver)
    check(uuid, "cuda_version", g["cuda_version"], cuda)
    ecc = text(s, "ecc_mode/current_ecc", "N/A")
    check(uuid, "ecc_enabled", g["ecc_enabled"], ecc == "Enabled")
    mig = text(s, "mig_mode/current_mig", "N/A")
    check(uuid, "mig_capable", g["mig_capable"], mig not in ("N/A", ""))
    check(uuid, "mig_enabled", g["mig_enabled"], mig == "Enabled")
    smi_migs = s.findall("mig_devices/mig_device")
    check(uuid, "mig instances", len(g["mig_instances"]), len(smi_migs))
    if g["mig_enabled"]:
        # `nvidia-smi -L` prints "  MIG 3g.40gb Device 0: (UUID: MIG-...)" under its GPU's line.
        block = listing.split(uuid, 1)[1].split("\nGPU ", 1)[0] if uuid in listing else ""
        smi_mig_uuids = sorted(re.findall(r"UUID: (MIG-[^)\s]+)", block))
        check(uuid, "mig uuids", sorted(m["uuid"] for m in g["mig_instances"]), smi_mig_uuids)
print(f"nvml_inventory: {failures} mismatch(es) over {len(smi_gpus)} GPU(s)")
sys.exit(1 if failures else 0)
PY
