#!/usr/bin/env bash
# Issues the credentials of docker-compose.yml's cluster into DIR (default
# .compose), once: conductord's credentials file in DIR/conductor (mounted
# into its container), each host's token in DIR/<host>/token (mounted into
# that host's container alone), and tokens for you in DIR: operator.token
# (conductorctl --token-file), submitter.token and admin.token. A DIR that
# has them already is left as it is. Revoke or add with
#   ./bin/conductord creds revoke --credentials DIR/conductor/credentials.json ID
# (conductord reads the file again within a second).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-${CONDUCTOR_SECRETS:-.compose}}
CREDS="$DIR/conductor/credentials.json"
if [ -f "$CREDS" ]; then
	exit 0
fi
umask 077
mkdir -p "$DIR/conductor" "$DIR/host-a" "$DIR/host-b"
CONDUCTORD=${CONDUCTORD:-./bin/conductord}
add() { "$CONDUCTORD" creds add --credentials "$CREDS" "$@" 2>/dev/null; }
add --role host --types squares --out "$DIR/host-a/token" host-a
add --role host --types squares --out "$DIR/host-b/token" host-b
add --role operator --out "$DIR/operator.token" operator
add --role submitter --out "$DIR/submitter.token" submitter
add --role admin --out "$DIR/admin.token" admin
echo "issued the cluster's credentials into $DIR (conductorctl --token-file $DIR/operator.token)"
