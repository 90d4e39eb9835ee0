#!/usr/bin/env bash
# Print how to use the running testbed (after `make testbed`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
access="$here/.testbed/access.json"

echo
echo "==> Slurm (sinfo on login1):"
docker exec hpchub-login1 sinfo || true
echo
if [ -f "$access" ]; then
    python3 - "$access" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
print(f"==> JupyterHub: {a['hub_url']}   (CA certificate: {a['ca_cert']})")
print(f"    admin: {a['admin']['name']} / {a['admin']['password']}")
for u in a["users"]:
    print(f"    user:  {u['name']} / {u['password']}")
print(f"    (also in {sys.argv[1]})")
PY
fi
cat <<'EOF2'

==> Shell on a node:  make shell NODE=login1   (or mgmt1, node1, node2)
    As a demo user:   docker exec -it -u alice hpchub-login1 bash -l
    Remove it all:    make testbed-down
EOF2
