#!/usr/bin/env bash
# Starts a private single-node Slurm (slurmctld + slurmd + its own munged) for benchmarks that
# compare gpuwarden against `srun` on the same machine (issue 7, bench/jobs). Everything lives in
# DIR: config, state, spool, logs, the munge socket and key; ports are PORT and PORT+1. Needs root.
#   bash tools/slurm-start.sh DIR [PORT]     -> prints "SLURM_CONF=DIR/slurm.conf" on its last line
#   bash tools/slurm-stop.sh DIR
# Installs slurm-wlm and munge from Debian's repositories when they are missing.
set -euo pipefail
DIR="$(mkdir -p "$1" && cd "$1" && pwd)"
PORT="${2:-$(( 40000 + RANDOM % 20000 ))}"
if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge > "$DIR/apt.log" 2>&1 || {
    echo "slurm-start: apt-get install slurm-wlm munge failed (see $DIR/apt.log)" >&2; exit 1; }
fi
chmod 755 "$DIR"  # munged runs as munge and must reach its files
mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool" "$DIR/log"
chown munge: "$DIR/munge" && chmod 700 "$DIR/munge"
# A fresh key per instance (munge refuses a key readable by others).
head -c 1024 /dev/urandom > "$DIR/munge/munge.key"
chown munge: "$DIR/munge/munge.key" && chmod 400 "$DIR/munge/munge.key"
runuser -u munge -- munged --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
  --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
  --seed-file="$DIR/munge/munged.seed" --force
CPUS="$(nproc)"
MEM_MB="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))"
cat > "$DIR/slurm.conf" <<CONF
ClusterName=gwbench
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$(( PORT + 1 ))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=bench Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$DIR/slurm.conf"
slurmctld -i -f "$SLURM_CONF" > "$DIR/log/slurmctld.out" 2>&1
slurmd -N localhost -f "$SLURM_CONF" > "$DIR/log/slurmd.out" 2>&1
for _ in $(seq 1 100); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)'; then
    echo "SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "slurm-start: the node did not become idle; logs in $DIR/log" >&2
sinfo >&2 || true
tail -n 20 "$DIR"/log/*.log >&2 || true
exit 1
