#!/bin/sh
# Redis of the cluster in containers (docker/compose.yaml, redis:7 image): the rules of
# ivr/cluster/redis_ha.py on one machine (quorum 2, down after 1000 ms, a node starting in the
# role the Sentinels name), with every part known by its service name, which stays when a
# container's address changes (Sentinel's resolve-hostnames and announce-hostnames).
#
#   sh redis.sh sentinel NAME FIRST   a Sentinel watching the primary, FIRST at the first start
#   sh redis.sh node NAME FIRST       a node: the primary if FIRST is its NAME at the first start
#
# REDIS_SENTINELS ("host:port ..."), REDIS_PORT, SENTINEL_PORT, REDIS_BIND and REDIS_DIR change
# the defaults below (a test on one machine gives each part its own loopback address).
set -eu

role=$1
name=$2
first=$3
master=${IVR_REDIS_MASTER_NAME:-ivr}
port=${REDIS_PORT:-6379}
sentinel_port=${SENTINEL_PORT:-26379}
sentinels=${REDIS_SENTINELS:-sentinel1:26379 sentinel2:26379 sentinel3:26379}
bind=${REDIS_BIND:-* -::*}
dir=${REDIS_DIR:-/data}
# The image's entry point runs redis-server as the redis user, not root.
launch=$(command -v docker-entrypoint.sh || true)

# "host port" of the primary in the newest view (highest epoch) of the Sentinels that answer;
# nothing if none does. While a failover is in progress, wait for its outcome (6 s at most):
# starting as the old primary meanwhile would make two.
named_primary() {
    tries=30
    while :; do
        views=""
        for sentinel in $sentinels; do
            view=$(timeout 2 redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
                       sentinel master "$master" 2>/dev/null | paste -d ' ' - - | awk '
                $1 == "ip" { ip = $2 } $1 == "port" { port = $2 } $1 == "flags" { flags = $2 }
                $1 == "config-epoch" { epoch = $2 }
                END { if (ip != "") print epoch, ip, port, flags }') || view=""
            [ -n "$view" ] && views="$views$view
"
        done
        [ -n "$views" ] || return 0
        case $views in
            *failover_in_progress*) [ "$tries" -gt 0 ] && { tries=$((tries - 1)); sleep 0.2; continue; } ;;
        esac
        printf '%s' "$views" | sort -n -r | head -n 1 | awk '{ print $2, $3 }'
        return 0
    done
}

case $role in
sentinel)
    mkdir -p "$dir"
    conf=$dir/sentinel.conf
    # Written once: Sentinel rewrites it with what it learns (primary, replicas, peers, epoch).
    if [ ! -f "$conf" ]; then
        cat > "$conf" <<EOF
port $sentinel_port
bind $bind
protected-mode no
dir $dir
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $name
sentinel monitor $master $first $port 2
sentinel down-after-milliseconds $master 1000
sentinel failover-timeout $master 3000
sentinel parallel-syncs $master 1
EOF
    fi
    exec $launch redis-server "$conf" --sentinel
    ;;
node)
    mkdir -p "$dir"
    conf=$dir/redis.conf
    primary=$(named_primary)
    if [ -z "$primary" ] && [ -f "$conf" ]; then
        # Nobody to ask: the role last written (by this script, or by Sentinel's rewrite).
        primary=$(awk '$1 == "replicaof" || $1 == "slaveof" { p = $2 " " $3 } END { print p }' "$conf")
        [ -n "$primary" ] || primary="$name $port"
    fi
    [ -n "$primary" ] || primary="$first $port"
    {
        echo "# Written at every start by redis.sh: the role is the one Sentinel names."
        echo "port $port"
        echo "bind $bind"
        echo "protected-mode no"
        echo "dir $dir"
        echo "appendonly yes"
        echo 'save ""'
        echo "repl-diskless-sync-delay 0"
        echo "replica-announce-ip $name"
        [ "$primary" = "$name $port" ] || echo "replicaof $primary"
    } > "$conf"
    if [ "$primary" = "$name $port" ]; then
        echo "redis $name: starting as primary"
    else
        echo "redis $name: starting as replica of $primary"
    fi
    exec $launch redis-server "$conf"
    ;;
*)
    echo "usage: redis.sh sentinel|node NAME FIRST_PRIMARY" >&2
    exit 2
    ;;
esac
