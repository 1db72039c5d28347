#!/usr/bin/env bash
# Starts a private rsyslogd receiving syslog over TLS (RFC 5425) for the audit sink's tests:
#   tools/rsyslog-start.sh DIR PORT
# Creates, once, a test PKI in DIR/pki with openssl:
#   ca.crt          the CA the server's audit.syslog.ca_file trusts
#   server.crt/key  the receiver's certificate from that CA (DNS:syslog.test, IP:127.0.0.1)
#   client.crt/key  a client certificate from that CA (mTLS: the receiver requires one)
#   impostor.crt/key  a certificate with the same names from ANOTHER CA (other-ca.crt)
#   wrongname.crt/key a certificate from the right CA for another name (DNS:other.test)
# RSYSLOG_CERT=server|impostor|wrongname picks what the receiver presents (default server).
# RSYSLOG_PKI_ONLY=1 only creates the PKI (for a test whose receiver starts later).
# rsyslogd runs in the foreground of its own session (-n -f DIR/rsyslog.conf -i DIR/rsyslogd.pid,
# work dir DIR/work), listening on 127.0.0.1:PORT only (imtcp, StreamDriver gtls, octet-counted
# framing), and writes every message it receives to DIR/received.log as
#   PROTOCOL-VERSION HOSTNAME APP-NAME MSGID STRUCTURED-DATA
# (protocol version 1 means rsyslog parsed it as RFC 5424). Waits until the port accepts and
# prints 127.0.0.1:PORT as the last line. Stop it with tools/rsyslog-stop.sh DIR.
# Needs the Debian packages rsyslog and rsyslog-gnutls (tools/install-deps.sh).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 DIR PORT" >&2
  exit 2
fi
DIR=$(realpath -m "$1")
PORT=$2
case "$PORT" in
  '' | *[!0-9]*) echo "rsyslog-start: PORT must be a number, got '$PORT'" >&2; exit 2 ;;
esac
RSYSLOGD=${RSYSLOGD:-$(command -v rsyslogd || echo /usr/sbin/rsyslogd)}
[ -x "$RSYSLOGD" ] || { echo "rsyslog-start: rsyslogd not found (apt-get install rsyslog rsyslog-gnutls)" >&2; exit 1; }
CERT=${RSYSLOG_CERT:-server}
case "$CERT" in server | impostor | wrongname) ;; *) echo "rsyslog-start: RSYSLOG_CERT must be server, impostor or wrongname" >&2; exit 2 ;; esac

mkdir -p "$DIR/pki" "$DIR/work"
chmod 700 "$DIR"
P="$DIR/pki"
if [ ! -s "$P/wrongname.crt" ]; then
  (
    cd "$P"
    umask 077
    mkca() {  # NAME SUBJECT
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=$2" -keyout "$1.key" -out "$1.crt" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    }
    mkcert() {  # NAME CA SUBJECT SAN EKU
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$3" \
        -keyout "$1.key" -out "$1.csr" 2>/dev/null
      printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$4" "$5" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 30 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    mkca ca "gpuwarden test syslog CA"
    mkca other-ca "impostor CA"
    mkcert server ca syslog.test "DNS:syslog.test,IP:127.0.0.1" serverAuth
    mkcert client ca gpuwarden-audit "DNS:gpuwarden-audit" clientAuth
    mkcert impostor other-ca syslog.test "DNS:syslog.test,IP:127.0.0.1" serverAuth
    mkcert wrongname ca other.test "DNS:other.test" serverAuth
    chmod 644 ./*.crt
  )
fi

[ "${RSYSLOG_PKI_ONLY:-0}" = 1 ] && exit 0

# The receiver trusts only client certificates from ca (mTLS); the impostor trusts its own CA.
CA_FOR_CLIENTS="$P/ca.crt"
[ "$CERT" = impostor ] && CA_FOR_CLIENTS="$P/other-ca.crt"
AUTHMODE=x509/certvalid
[ "$CERT" = impostor ] && AUTHMODE=anon

cat > "$DIR/rsyslog.conf" <<CONF
global(
  workDirectory="$DIR/work"
  maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="$CA_FOR_CLIENTS"
  defaultNetstreamDriverCertFile="$P/$CERT.crt"
  defaultNetstreamDriverKeyFile="$P/$CERT.key"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"
       streamDriver.authMode="$AUTHMODE")
input(type="imtcp" address="127.0.0.1" port="$PORT" supportOctetCountedFraming="on")
template(name="fields" type="string"
         string="%protocol-version% %hostname% %app-name% %msgid% %structured-data%\n")
action(type="omfile" file="$DIR/received.log" template="fields" flushOnTXEnd="on")
CONF

if [ -s "$DIR/rsyslogd.pid" ] && kill -0 "$(cat "$DIR/rsyslogd.pid")" 2>/dev/null; then
  echo "rsyslog-start: already running (pid $(cat "$DIR/rsyslogd.pid"))" >&2
else
  rm -f "$DIR/rsyslogd.pid"
  setsid "$RSYSLOGD" -n -f "$DIR/rsyslog.conf" -i "$DIR/rsyslogd.pid" >>"$DIR/rsyslogd.log" 2>&1 &
fi
for _ in $(seq 1 200); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "127.0.0.1:$PORT"
    exit 0
  fi
  sleep 0.05
done
echo "rsyslog-start: rsyslogd did not listen on 127.0.0.1:$PORT; its log:" >&2
cat "$DIR/rsyslogd.log" >&2 || true
exit 1
