#!/usr/bin/env bash
# `make demo`: starts the gpuwarden server on 127.0.0.1 with state in ./demo-data, seeds tenants
# acme and globex (a tenant-admin, a developer and an auditor each) through the real CLI, prints
# where to go and how to log in, and runs until Ctrl-C (which stops the server cleanly).
# Re-running keeps ./demo-data (and its logins); `rm -rf demo-data` starts afresh.
set -euo pipefail
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="${DEMO_DIR:-$ROOT/demo-data}"
PORT="${DEMO_PORT:-8443}"
AGENT_PORT="${DEMO_AGENT_PORT:-$((PORT + 1))}"
mkdir -p "$DATA"
chmod 711 "$DATA"  # traverse only: the sandbox's per-tenant users must reach the agents' job bundles
LOGINS="$DATA/logins.txt"
SEED_CLI="$DATA/cli-seed"
export GPUWARDEN_CONFIG_DIR="$SEED_CLI"

newpw() { head -c 15 /dev/urandom | base64 | tr -d '/+=' | cut -c1-16; }

if [ ! -f "$DATA/admin.pw" ]; then
  (umask 077; newpw > "$DATA/admin.pw")
fi

# Refuse to start a second copy over the same port.
if curl -sk --max-time 1 "https://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
  echo "demo: something already answers on https://127.0.0.1:$PORT (DEMO_PORT=... picks another port)" >&2
  exit 1
fi

rm -f "$DATA/state/server.json"
"$BIN" server --data-dir "$DATA/state" --listen "127.0.0.1:$PORT" --agent-listen "127.0.0.1:$AGENT_PORT" \
  --admin-password-file "$DATA/admin.pw" >"$DATA/server.log" 2>&1 &
SERVER_PID=$!
AGENT_PIDS=()
stop() {
  echo
  for pid in "${AGENT_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${AGENT_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "demo: stopping the server (pid $SERVER_PID)"
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  exit 0
}
trap stop INT TERM

for _ in $(seq 1 100); do
  [ -s "$DATA/state/server.json" ] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "demo: the server exited:" >&2; cat "$DATA/server.log" >&2; exit 1
  fi
  sleep 0.1
done
URL="https://127.0.0.1:$PORT"
FP="$(sed -n 's/.*"ca_fingerprint":"\([^"]*\)".*/\1/p' "$DATA/state/server.json")"

# Admins must use MFA (issue 3). The demo enrolls the cluster admin on the first run and keeps
# its TOTP secret in $DATA/admin.totp (0600), so codes come from oathtool (apt-get install
# oathtool) and the secret can be added to a phone app too.
TOTP="$DATA/admin.totp"
admin_login() {
  local code=""
  [ -s "$TOTP" ] && code="$(oathtool --totp -b "$(cat "$TOTP")")"
  if ! "$BIN" login --server "$URL" --user admin --password-stdin --ca-fingerprint "$FP" \
      ${code:+--otp "$code"} < "$DATA/admin.pw" >/dev/null 2>"$DATA/login.err"; then
    # A code is accepted once: if this step's code was just used, wait for the next one.
    grep -q "code already used" "$DATA/login.err" || { cat "$DATA/login.err" >&2; return 1; }
    sleep 30
    admin_login
  fi
}
if ! command -v oathtool >/dev/null; then
  echo "demo: oathtool is needed for the admin's MFA codes (apt-get install oathtool)" >&2
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  exit 1
fi
admin_login
if [ ! -s "$TOTP" ]; then
  secret="$("$BIN" mfa enroll -o json | sed -n 's/.*"secret": "\([A-Z2-7]*\)".*/\1/p')"
  (umask 077; echo "$secret" > "$TOTP")
  "$BIN" mfa confirm "$(oathtool --totp -b "$secret")" -o json > "$DATA/admin.recovery"
  chmod 600 "$DATA/admin.recovery"
fi
if [ ! -f "$LOGINS" ]; then
  (umask 077; printf 'admin %s cluster admin (MFA: secret in %s)\n' "$(cat "$DATA/admin.pw")" "$TOTP" > "$LOGINS.tmp")
  for t in acme globex; do
    "$BIN" tenant create "$t" >/dev/null
    for pair in admin:tenant-admin dev:developer auditor:auditor; do
      user="$t-${pair%%:*}"; role="${pair##*:}"; pw="$(newpw)"
      echo "$pw" | "$BIN" user create "$user" --tenant "$t" --role "$role" --password-stdin >/dev/null
      printf '%s %s %s of %s\n' "$user" "$pw" "$role" "$t" >> "$LOGINS.tmp"
    done
  done
  mv "$LOGINS.tmp" "$LOGINS"
fi

# Two node agents with simulated GPUs (issue 6). Each joins once with a one-time token (kept in
# its data dir for a re-run, where the agent skips the join) and then heartbeats over mTLS.
start_agent() {  # name pool gpu-spec
  local dir="$DATA/agent-$1"
  if [ ! -f "$dir/node.json" ]; then
    mkdir -p "$dir" && chmod 700 "$dir"
    "$BIN" node join-token create --pool "$2" --ttl 10m -o json |
      sed -n 's/.*"token": "\([^"]*\)".*/\1/p' > "$dir/join-token"
  fi
  "$BIN" agent --server "$URL" --join-token "$dir/join-token" --data-dir "$dir" --gpus "$3" \
    --name "$1" --executor "$EXECUTOR" >"$DATA/agent-$1.log" 2>&1 &
  AGENT_PIDS+=($!)
}
# Jobs run in the sandbox (issue 7: runc on the read-only host image, a user namespace per
# tenant, cgroup limits, seccomp, only the assigned GPU's node). It needs root and runc
# (tools/install-deps.sh installs runc and bubblewrap); without them the demo falls back to the
# process executor (plain processes, NOT a security boundary) and says so.
EXECUTOR=sandbox
EXECUTOR_NOTE="jobs run sandboxed (runc, host image read-only, one user namespace per tenant)"
if [ "$(id -u)" != 0 ] || ! command -v runc >/dev/null; then
  EXECUTOR=process
  EXECUTOR_NOTE="jobs run as plain processes, NOT sandboxed: the sandbox needs root and runc (tools/install-deps.sh)"
  echo "demo: $EXECUTOR_NOTE" >&2
fi
start_agent gpu-node-1 h100 "sim:4xH100-80GB,2xH100-80GB:mig"
start_agent gpu-node-2 h200 "sim:4xH200-141GB"
for _ in $(seq 1 50); do
  [ "$("$BIN" node ls -o json | grep -c '"status": "ready"')" -ge 2 ] && break
  sleep 0.2
done

# Sample jobs of two tenants, side by side (issue 6/7): each tenant's developer submits through
# the real CLI with its own login; the scheduler gives them different GPUs.
JOBS_NOTE="$DATA/jobs.txt"
if [ ! -s "$JOBS_NOTE" ]; then
  : > "$JOBS_NOTE"
  for t in acme globex; do
    pw="$(awk -v u="$t-dev" '$1 == u {print $2}' "$LOGINS")"
    export GPUWARDEN_CONFIG_DIR="$DATA/cli-$t-dev"
    echo "$pw" | "$BIN" login --server "$URL" --user "$t-dev" --password-stdin --ca-fingerprint "$FP" >/dev/null
    for n in 1 2; do
      id="$("$BIN" job submit -o json --name "$t-train-$n" --gpus 1 -- sh -c \
        'echo "tenant job $GPUWARDEN_JOB_NAME on GPU $CUDA_VISIBLE_DEVICES (pid $$, uid $(id -u), devices: $(ls /dev | grep nvidia | tr "\n" " "))"; for i in 1 2 3 4 5; do echo "step $i"; sleep 1; done' |
        sed -n 's/^  "id": "\([^"]*\)".*/\1/p')"
      echo "$t-dev $id" >> "$JOBS_NOTE"
    done
  done
  export GPUWARDEN_CONFIG_DIR="$SEED_CLI"
  sleep 2
fi

cat <<MSG

  gpuwarden demo is running (state in $DATA, log in $DATA/server.log)

  server:          $URL
  CA fingerprint:  $FP
  health:          curl --cacert $DATA/state/pki/ca.crt $URL/healthz

  nodes (agents with simulated GPUs, logs in $DATA/agent-*.log):
$("$BIN" node ls | sed 's/^/    /')

  logins (user, password, role):
$(sed 's/^/    /' "$LOGINS")

  admins need MFA: the cluster admin is enrolled (codes: oathtool --totp -b \$(cat $TOTP));
  acme-admin and globex-admin enroll on their first login:
    $BIN login --server $URL --user acme-admin --ca-fingerprint $FP
    $BIN mfa enroll                     # scan the QR code with an authenticator app
    $BIN mfa confirm CODE               # prints 10 recovery codes
  (until then the server refuses them everything but enrollment: "MFA enrollment required")

  try:
    $BIN login --server $URL --user acme-dev --ca-fingerprint $FP
    $BIN whoami
    $BIN user ls --tenant globex        # refused: acme-dev has no rights in globex
    $BIN token create ci --role viewer  # an API token, shown once
    (as admin) $BIN node ls; $BIN node show gpu-node-1; $BIN node cordon gpu-node-2
    (as admin) $BIN pool dedicate h200 --tenant acme   # only acme's jobs run on the H200 node; $BIN pool ls

  sample jobs of two tenants (acme-dev and globex-dev, logged in under $DATA/cli-*-dev):
$(sed 's/^/    /' "$JOBS_NOTE")
    GPUWARDEN_CONFIG_DIR=$DATA/cli-acme-dev $BIN job ls
    GPUWARDEN_CONFIG_DIR=$DATA/cli-acme-dev $BIN job logs -f $(awk '$1 == "acme-dev" {print $2; exit}' "$JOBS_NOTE")
    GPUWARDEN_CONFIG_DIR=$DATA/cli-globex-dev $BIN job ls     # globex sees only its own jobs
    $BIN job submit --gpus 1 -- nvidia-smi -L        # as a developer: --mig 1g.10gb, --fraction 0.5, -f spec.json
  ($EXECUTOR_NOTE)

  Ctrl-C stops the server.
MSG
wait "$SERVER_PID"
