#!/usr/bin/env bash
# Stops what tools/slurm-start.sh DIR started and removes DIR.
set -uo pipefail
DIR="$1"
for f in slurmd.pid slurmctld.pid munge/munged.pid; do
  [ -s "$DIR/$f" ] && kill -TERM "$(cat "$DIR/$f")" 2>/dev/null
done
sleep 0.5
for f in slurmd.pid slurmctld.pid munge/munged.pid; do
  [ -s "$DIR/$f" ] && kill -KILL "$(cat "$DIR/$f")" 2>/dev/null
done
# Daemons that never wrote a pid file (a failed start) are found by their config path.
pkill -KILL -f "$DIR/slurm.conf" 2>/dev/null
rm -rf "$DIR"
exit 0
