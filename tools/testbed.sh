#!/usr/bin/env bash
# Drive the local testbed: docker engine, images, compose up/down.
# Used by the Makefile and by Molecule's create/destroy playbooks, so both bring the
# testbed up the same way.
#
#   tools/testbed.sh engine   make sure a docker engine answers (install/start it if we may)
#   tools/testbed.sh images   build the base and node images if missing
#   tools/testbed.sh up       engine + images + start the node containers, wait for systemd
#   tools/testbed.sh down     remove containers, network and volumes
#   tools/testbed.sh status   show the containers
#   tools/testbed.sh shell [NODE]     a root login shell on a node (default: the login node)
#   tools/testbed.sh compose ARGS     docker compose on the testbed's compose file
#   tools/testbed.sh topology ARGS    tools/testbed_topology.py (hosts, login, ...)
#
# The nodes, their containers and the published port are described once, in the Ansible inventory
# (inventories/testbed/hosts.yml); tools/testbed_topology.py writes the compose file from it and from
# the base containers/compose.yml.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
project="${HPCHUB_TESTBED_PROJECT:-hpchub-testbed}"
compose_file="$here/.testbed/compose.yml"
node_image="${HPCHUB_NODE_IMAGE:-hpchub/node:bookworm}"
base_image="${HPCHUB_BASE_IMAGE:-hpchub/base:bookworm}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# The project's venv has PyYAML; without one (e.g. `make testbed-down` before `make venv`), python3.
topology() {
    local python=python3
    [ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"
    "$python" "$here/tools/testbed_topology.py" "$@"
}

# "NAME CONTAINER" lines of the inventory's hosts.
hosts() {
    topology hosts || die "cannot read the testbed's hosts from inventories/testbed/hosts.yml"
}

docker_answers() { docker info >/dev/null 2>&1; }

engine() {
    if docker_answers; then
        return 0
    fi
    local os_id=""
    [ -r /etc/os-release ] && os_id="$(. /etc/os-release && echo "${ID:-} ${ID_LIKE:-}")"
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || [[ "$os_id" != *debian* && "$os_id" != *ubuntu* ]]; then
        cat >&2 <<'MSG'
ERROR: no docker engine answers (docker info failed).
Install and start one, then re-run:
  Debian/Ubuntu (as root):  apt-get install docker.io docker-compose debootstrap
                            systemctl start docker   (or: dockerd &)
  Other systems:            https://docs.docker.com/engine/install/ plus Compose and debootstrap
Add your user to the 'docker' group (or run as root) so `docker info` works.
MSG
        exit 1
    fi
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        say "no docker engine answers: installing Debian's ${missing[*]} (root on $os_id)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ -d /run/systemd/system ]; then
        say "starting docker with systemctl"
        systemctl start docker
    else
        # No systemd on this host (containers, CI sandboxes): run dockerd in the background.
        say "starting dockerd in the background (log: /var/log/hpchub-dockerd.log)"
        nohup dockerd >/var/log/hpchub-dockerd.log 2>&1 &
    fi
    for _ in $(seq 1 60); do
        docker_answers && { say "docker engine is up"; return 0; }
        sleep 1
    done
    tail -20 /var/log/hpchub-dockerd.log >&2 2>/dev/null || true
    die "the docker engine did not answer within 60 s"
}

compose() {
    topology compose "$compose_file" || die "cannot write $compose_file"
    if docker compose version >/dev/null 2>&1; then
        docker compose -p "$project" -f "$compose_file" "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose -p "$project" -f "$compose_file" "$@"
    else
        die "neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed"
    fi
}

images() {
    HPCHUB_BASE_IMAGE="$base_image" "$here/containers/base/build-base-image.sh"
    if docker image inspect "$node_image" >/dev/null 2>&1 && [ "${HPCHUB_REBUILD:-0}" != 1 ]; then
        say "node image $node_image already present"
    else
        say "building node image $node_image"
        DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$base_image" \
            -t "$node_image" "$here/containers/node" 2>&1 | grep -v -i -e deprecated -e buildkit -e '^ *$' -e 'environment-variable' || true
        docker image inspect "$node_image" >/dev/null 2>&1 || die "building $node_image failed"
    fi
}

# Wait for systemd in every container; $1: the "NAME CONTAINER" lines of hosts.
wait_systemd() {
    local node container state
    while read -r node container; do
        for _ in $(seq 1 60); do
            state="$(docker exec "$container" systemctl is-system-running 2>/dev/null || true)"
            case "$state" in
                running|degraded) break ;;
            esac
            sleep 1
        done
        case "$state" in
            running) ;;
            degraded) say "warning: $node is degraded: $(docker exec "$container" systemctl --failed --no-legend --plain | tr '\n' ' ')" ;;
            *) die "systemd in $container did not come up (state: ${state:-none})" ;;
        esac
    done <<<"$1"
    say "systemd is running in $(names "$1")"
}

# The node names of "NAME CONTAINER" lines, on one line.
names() { cut -d' ' -f1 <<<"$1" | paste -sd' ' -; }

up() {
    local listing
    listing="$(hosts)"
    engine
    images
    say "starting the testbed containers ($(names "$listing"))"
    compose up -d --no-build 2>&1 | grep -v -e '^$' || true
    wait_systemd "$listing"
}

down() {
    if ! docker_answers; then
        say "no docker engine answers: nothing to remove"
        return 0
    fi
    say "removing the testbed (containers, network, volumes)"
    compose down -v --remove-orphans 2>&1 | grep -v -e '^$' || true
    # Leftovers of a run under another compose version/project name (same fixed names).
    local leftovers
    leftovers="$(docker ps -aq --filter label=org.hpchub.testbed=1)"
    [ -z "$leftovers" ] || docker rm -f $leftovers >/dev/null
    local name
    for name in $(topology volumes); do docker volume rm "$name" >/dev/null 2>&1 || true; done
    for name in $(topology networks); do docker network rm "$name" >/dev/null 2>&1 || true; done
}

status() {
    docker ps -a --filter label=org.hpchub.testbed=1 --format 'table {{.Names}}\t{{.Status}}\t{{.Ports}}'
}

shell() {
    local listing node container
    listing="$(hosts)"
    node="${1:-$(topology login | cut -d' ' -f1)}"
    container="$(awk -v node="$node" '$1 == node { print $2 }' <<<"$listing")"
    [ -n "$container" ] || die "$node is not a testbed node ($(names "$listing"))"
    exec docker exec -it "$container" bash -l
}

case "${1:-}" in
    engine) engine ;;
    images) engine; images ;;
    up) up ;;
    down) down ;;
    status) status ;;
    shell) shift; shell "$@" ;;
    compose) shift; compose "$@" ;;
    topology) shift; topology "$@" ;;
    *) echo "usage: $0 {engine|images|up|down|status|shell [NODE]|compose ARGS|topology ARGS}" >&2; exit 2 ;;
esac
