#!/usr/bin/env bash
# Print how to use the running testbed (after `make testbed`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
access="$here/.testbed/access.json"
# The node names and containers come from the inventory (tools/testbed_topology.py).
read -r login login_container < <("$here/tools/testbed.sh" topology login)
others="$("$here/tools/testbed.sh" topology hosts | cut -d' ' -f1 | grep -vx "$login" | paste -sd' ' -)"

echo
echo "==> Slurm (sinfo on $login):"
docker exec "$login_container" sinfo || true
echo
user="USER"
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
    user="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["users"][0]["name"])' "$access")"
fi
cat <<EOF2

==> Shell on a node:  make shell NODE=$login   (or ${others// /, })
    As a demo user:   docker exec -it -u $user $login_container bash -l
    Remove it all:    make testbed-down
EOF2
