#!/usr/bin/env bash
# Issues the secrets of docker-compose.cluster.yml into DIR (default
# .compose-cluster), once:
#   DIR/nats/auth.conf     the clients' token, as the NATS servers check it
#   DIR/nats/routes.conf   the routes' user and password, and the routes
#   DIR/conductor/token    the same token, for conductord and workerd
#                          (--token-file) and for you: the HTTP API's
#                          admin token (conductorctl --token-file)
# The NATS nodes mount DIR/nats, the conductords and the hosts DIR/conductor,
# read-only; nothing secret is in an image or on a command line. A DIR that
# has them already is left as it is (rotate: `make compose-cluster-down`,
# remove DIR, `make compose-cluster-up`).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-${CONDUCTOR_CLUSTER_SECRETS:-.compose-cluster}}
if [ -f "$DIR/conductor/token" ] && [ -f "$DIR/nats/auth.conf" ] && [ -f "$DIR/nats/routes.conf" ]; then
	exit 0
fi
umask 077
mkdir -p "$DIR/nats" "$DIR/conductor"
# 32 random bytes in hex: no character a NATS config string or a URL's
# userinfo would need to quote.
secret() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
TOKEN=$(secret)
ROUTE=$(secret)
printf '%s\n' "$TOKEN" >"$DIR/conductor/token"
cat >"$DIR/nats/auth.conf" <<CONF
# Written by scripts/compose-cluster-creds.sh: the one token of the
# cluster's NATS clients (conductord, workerd).
authorization {
  token: "$TOKEN"
  timeout: 2
}
CONF
cat >"$DIR/nats/routes.conf" <<CONF
# Written by scripts/compose-cluster-creds.sh: the routes' credential.
authorization {
  user: route
  password: "$ROUTE"
  timeout: 2
}
routes: [
  "nats-route://route:$ROUTE@nats-1:6222"
  "nats-route://route:$ROUTE@nats-2:6222"
  "nats-route://route:$ROUTE@nats-3:6222"
]
CONF
echo "issued the compose cluster's secrets into $DIR (API token: $DIR/conductor/token)"
