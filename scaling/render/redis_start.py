"""Start scripts of the Redis containers, the same on Docker and Kubernetes.

Each node learns who it is from ``$NODE_HOST`` (its container name on Docker, its pod DNS
name on Kubernetes). Under Sentinel a data node asks the Sentinels who the master is before
it starts, so a node recreated after a failover rejoins as a replica of the current master
instead of forcing its first-boot role. The cluster script forms a Redis Cluster with a fixed
master/replica layout and, on later runs, joins new nodes and rebalances slots onto new
masters; it never removes a node.
"""

from __future__ import annotations

from collections.abc import Sequence

from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.redis import ESCAPE_PASSWORD_SH, SECRETS_FILE_SH, sentinel_auth_sh

# Stand-in for the current master in the Sentinel template; the start script substitutes it.
MASTER_TOKEN = "__MASTER_HOST__"


def ask_sentinels(cli: str, sentinels: Sequence[Endpoint], master_name: str, fallback: str) -> str:
    """Shell that sets $master to the master the Sentinels report, or to the fallback (first
    boot, or no Sentinel answers). A Sentinel skips itself when SKIP_SELF=1."""
    loop = " ".join(str(s) for s in sentinels)
    return f"""\
master=""
for peer in {loop}; do
  host=${{peer%:*}}
  port=${{peer##*:}}
  [ "$host" = "$NODE_HOST" ] && [ "${{SKIP_SELF:-0}}" = 1 ] && continue
  reply=$(timeout 5 {cli} -h "$host" -p "$port" --raw \\
    sentinel get-master-addr-by-name {master_name} 2>/dev/null | head -n 1) || reply=""
  case "$reply" in ""|*[!A-Za-z0-9.-]*) continue ;; esac
  master="$reply"
  break
done
[ -n "$master" ] || master={fallback}
"""


def refresh_nodes_conf(data_dir: str) -> str:
    """Shell that rewrites each peer's IP in nodes.conf from its stable hostname: IPs change
    on restart, and a cluster whose nodes all restarted at once must find itself again."""
    conf = f"{data_dir}/nodes.conf"
    return f"""\
if [ -s {conf} ] && command -v getent >/dev/null 2>&1; then
  : > {conf}.new
  while read -r id addr rest; do
    case "$addr" in
      *:*@*,*)
        host=${{addr#*,}}
        host=${{host%%,*}}
        ip=$(getent hosts "$host" | head -n 1 | cut -d ' ' -f 1) || ip=""
        [ -z "$ip" ] || addr="$ip:${{addr#*:}}"
        ;;
    esac
    printf '%s %s %s\\n' "$id" "$addr" "$rest" >> {conf}.new
  done < {conf}
  mv {conf}.new {conf}
fi
"""


def data_start_script(
    spec: PhaseSpec,
    *,
    conf: str,
    secrets_file: str,
    data_dir: str,
    port: int,
    sentinels: Sequence[Endpoint],
    first_master: str,
    follow: tuple[str, str] | None = None,
    follow_announce: str | None = None,
) -> str:
    """A data node: password into the included secrets file, then (Sentinel) ask who the
    master is, announce ``$NODE_HOST``, exec the server with the shared redis.conf.

    ``follow``: (host, port) of a transition's source master (scaling.promotion): the
    phase's master replicates from it (its replicas from the master, as always) until the
    cut-over renders the script without it. The source's password is the phase's own (the
    target inherits it), so ``masterauth`` already holds it. ``follow_announce``: the name
    the master gives the source while it follows (Docker: its container name, as
    ``$NODE_HOST``, ``redis-0``, would name the source's own master on the source's side)."""
    server, cli = spec.redis.binaries
    mode = spec.redis.mode
    script = (
        f"set -eu\numask 077\n{SECRETS_FILE_SH} > {secrets_file}\n"
        'export REDISCLI_AUTH="$REDIS_PASSWORD"\n'
    )
    if mode == "cluster":
        script += refresh_nodes_conf(data_dir)
        script += 'set -- "$@" --cluster-announce-hostname "$NODE_HOST"\n'
    if mode == "sentinel":
        script += ask_sentinels(cli, sentinels, spec.redis.master_name, first_master)
        script += f'set -- "$@" --replica-announce-ip "$NODE_HOST" --replica-announce-port {port}\n'
        script += f'[ "$master" = "$NODE_HOST" ] || set -- "$@" --replicaof "$master" {port}\n'
    if follow is not None:
        host, source_port = follow
        leader = '[ "$master" != "$NODE_HOST" ] || ' if mode == "sentinel" else ""
        announce = (
            f" --replica-announce-ip {follow_announce}"
            if follow_announce and mode == "sentinel"
            else ""
        )
        script += f'{leader}set -- "$@" --replicaof {host} {source_port}{announce}\n'
    script += f'exec {server} {conf} "$@"\n'
    return script


def sentinel_start_script(
    spec: PhaseSpec,
    *,
    template: str,
    conf: str,
    port: int,
    sentinels: Sequence[Endpoint],
    first_master: str,
) -> str:
    """A Sentinel: monitors the master its peers report (the first master on first boot),
    in a writable copy of the template (Sentinel rewrites its file) with auth appended."""
    server, cli = spec.redis.binaries
    return (
        "set -eu\numask 077\n"
        + ESCAPE_PASSWORD_SH
        + '\nexport REDISCLI_AUTH="$REDIS_PASSWORD"\nSKIP_SELF=1\n'
        + ask_sentinels(cli, sentinels, spec.redis.master_name, first_master)
        # Sentinel refuses a monitor target it cannot resolve: wait for its DNS record.
        + "if command -v getent >/dev/null 2>&1; then\n"
        + '  until getent hosts "$master" >/dev/null 2>&1; do sleep 2; done\nfi\n'
        + f'sed "s/{MASTER_TOKEN}/$master/" {template} > {conf}\n'
        + f"{sentinel_auth_sh(spec)} >> {conf}\n"
        + f'exec {server} {conf} --sentinel --sentinel announce-ip "$NODE_HOST" '
        + f'--sentinel announce-port {port} "$@"\n'
    )


def cluster_script(spec: PhaseSpec, masters: Sequence[Endpoint], replicas: dict[str, str]) -> str:
    """Forms the cluster or grows it; safe to run any number of times.

    ``masters``: the master nodes in order; ``replicas``: replica "host:port" → its
    master's "host:port". First run: ``--cluster create`` of the masters alone, then every
    replica joins its own master (a fixed layout, unlike ``--cluster-replicas``). Later
    runs: a master not yet in the cluster joins and the slots are rebalanced onto it; a
    replica not yet in the cluster joins its master. Nothing is ever removed.
    """
    _, cli = spec.redis.binaries
    seed = str(masters[0])
    all_nodes = [str(m) for m in masters] + list(replicas)
    replica_lines = "".join(f"join_replica {node} {master}\n" for node, master in replicas.items())
    floor = spec.redis.min_replicas_to_write
    return f"""\
set -eu
export REDISCLI_AUTH="$REDIS_PASSWORD"
cli() {{ node=$1; shift; timeout 30 {cli} -h "${{node%:*}}" -p "${{node##*:}}" "$@"; }}
known() {{ cli "$1" cluster info | sed -n 's/^cluster_known_nodes:\\([0-9]*\\).*/\\1/p'; }}
online() {{ cli "$1" info replication | grep -c 'state=online' || true; }}
for node in {" ".join(all_nodes)}; do
  until [ "$(cli "$node" ping 2>/dev/null)" = PONG ]; do echo "waiting for $node"; sleep 2; done
done
formed=0
for node in {" ".join(all_nodes)}; do
  if [ "$(known "$node")" -gt 1 ]; then formed=1; fi
done
if [ "$formed" = 0 ]; then
  {cli} --cluster create {" ".join(str(m) for m in masters)} --cluster-replicas 0 --cluster-yes
fi
added=""
for node in {" ".join(str(m) for m in masters[1:])}; do
  if [ "$(known "$node")" -le 1 ]; then
    # add-node copies the cluster's functions with FUNCTION RESTORE, a write that
    # min-replicas-to-write refuses on a master without replicas. An empty node takes no
    # writes: the floor is lifted until its replica is online (restored below).
    cli "$node" config set min-replicas-to-write 0 > /dev/null
    {cli} --cluster add-node "$node" {seed}
    added="$added $node"
  fi
done
join_replica() {{
  if [ "$(known "$1")" -le 1 ]; then
    until id=$(cli "$2" cluster myid) && [ -n "$id" ]; do sleep 1; done
    # A master that joined a moment ago may not know every node yet, and add-node refuses
    # a cluster whose nodes disagree: wait until the master's view is complete.
    until {cli} --cluster check "$2" > /dev/null 2>&1; do sleep 1; done
    {cli} --cluster add-node "$1" "$2" --cluster-slave --cluster-master-id "$id"
  fi
}}
{replica_lines}for node in $added; do
  until [ "$(online "$node")" -ge {spec.redis.replicas_per_master} ]; do sleep 1; done
  cli "$node" config set min-replicas-to-write {floor} > /dev/null
done
if [ -n "$added" ]; then
  until {cli} --cluster check {seed} > /dev/null; do sleep 2; done
  {cli} --cluster rebalance {seed} --cluster-use-empty-masters
fi
echo "cluster of {len(all_nodes)} nodes in place"
"""
