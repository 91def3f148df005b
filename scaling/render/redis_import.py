"""A Redis Cluster target's keys, copied from its source's master at the cut-over.

A Redis Cluster cannot replicate a standalone or Sentinel-managed master (``REPLICAOF``
makes a replica of one server, not of a sharded keyspace), so a cluster target (scale)
starts empty and takes the source's keys in one pass while the source's writes are held.
Pure text: one-shot shell over ``redis-cli`` (the Redis/Valkey image), the same on Docker
(a one-shot container at ``sikka:promoteCutover``) and Kubernetes (a Job), run by the
integration test against servers on loopback.

The copy runs where both sides answer (the target's network, joined to the source's), not
on the source: ``MIGRATE`` (what ``redis-cli --cluster import`` sends) would have the
source's server connect to each target node at the address the cluster announces, which a
Docker source cannot reach, and ``CLIENT PAUSE WRITE`` holds ``MIGRATE`` like any write.

1. wait (bounded) until the target cluster is formed (``cluster_state:ok``);
2. the marker key :data:`MARKER` on the target says where an earlier run got: "imported"
   → nothing to copy (the source is told to refuse writes again); "copying" → the earlier
   run stopped part-way: keys it copied that the source no longer holds are deleted from
   the target before copying again. No marker and keys in the target → refused (its keys
   are its own; nothing is mixed into them);
3. the source's master must be a master and hold no database but 0 (a cluster has db 0);
4. ``CLIENT PAUSE WRITE`` on the source (it expires by itself, should the run die), then
   one streaming pass: ``SCAN`` → ``ECHO``/``DUMP``/``PTTL`` on the source (reads: the pause
   lets them through) → ``RESTORE key ttl payload REPLACE`` through ``redis-cli -c`` (each
   key to the master owning its slot). Keys are binary-safe: ``redis-cli --no-raw`` quotes
   them as its input parser reads them back;
5. the target's key count (every master's ``DBSIZE``) must equal the source's, less keys
   that expired during the pass and, at most, those whose TTL was shorter than the pass;
   otherwise refused and the source takes writes again;
6. the marker says "imported", the source's master refuses writes from then on
   (``min-replicas-to-write``, in memory: a restart of the source clears it) and the pause
   ends.

The write pause lasts the pass: 2,305 keys in 0.59 s, 5,324 in 1.5 s through
``redis-cli`` on loopback (it sends one command at a time), measured by the integration
test. The first key the target refuses ends the pass.
Beyond :data:`COPY_SECONDS` the run gives up (the source takes writes again).
"""

from __future__ import annotations

from collections.abc import Sequence

from scaling.render.cutover import PAUSE_SOURCE, REFUSED
from scaling.render.endpoints import Endpoint

# Kept on the target: where the copy stands ("copying from …" / "imported from …").
MARKER = "sikka:transition:redis-import"
# The copy's budget: the source's writes are paused no longer (plus the checks around it).
COPY_SECONDS = 120
# How long the target cluster may take to form before the run gives up (not a pause).
READY_SECONDS = 600


def redis_import_script(
    source: Endpoint | tuple[str, str | int],
    seeds: Sequence[Endpoint],
    *,
    cli: str = "redis-cli",
    password_env: str = "REDIS_PASSWORD",
    copy_seconds: int = COPY_SECONDS,
    ready_seconds: int = READY_SECONDS,
) -> str:
    """The import: ``source`` is the source's master, ``seeds`` the target cluster's masters
    (any one that answers serves). One password for both (the target inherits the
    source's)."""
    host, port = (source.host, source.port) if isinstance(source, Endpoint) else source
    pause_ms = (copy_seconds + 60) * 1000
    # A key whose TTL is shorter than this may expire on the target before it is counted.
    short_ms = (copy_seconds + 60) * 1000
    return f"""\
set -eu
REDISCLI_AUTH="${password_env}"
export REDISCLI_AUTH
SOURCE_HOST={host}
SOURCE_PORT={port}
SEEDS="{" ".join(str(s) for s in seeds)}"
MARKER='{MARKER}'
WORK="${{TMPDIR:-/tmp}}/sikka-redis-import.$$"
say() {{ echo "redis import: $*"; }}
refuse() {{ echo "redis import refused: $*" >&2; exit {REFUSED}; }}
src() {{ timeout 10 {cli} --no-auth-warning -h "$SOURCE_HOST" -p "$SOURCE_PORT" "$@"; }}
on() {{
  node=$1
  shift
  timeout 10 {cli} --no-auth-warning -h "${{node%:*}}" -p "${{node##*:}}" "$@"
}}
# The source's clock in milliseconds (its TIME: a read, served while writes are paused).
now_ms() {{
  src time | awk 'NR == 1 {{ s = $1 }} NR == 2 {{ printf "%.0f\\n", s * 1000 + $1 / 1000 }}'
}}
field() {{ sed -n "s/^$1:\\([^[:space:]]*\\).*/\\1/p" | tr -d '\\r'; }}
# A member of the formed target cluster.
seed() {{
  for node in $SEEDS; do
    if on "$node" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then
      echo "$node"
      return 0
    fi
  done
  return 1
}}
# Through the cluster: redis-cli follows MOVED to the master owning the key's slot.
dst() {{ timeout 10 {cli} --no-auth-warning -c -h "${{SEED%:*}}" -p "${{SEED##*:}}" "$@" |
  grep -v '^-> Redirected' || true; }}
# The masters holding slots, "host:port" (the announced hostname when there is one).
masters() {{
  on "$SEED" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail|handshake|noaddr/ && NF > 8 {{
    split($2, at, "@"); split(at[2], bus, ","); n = split(at[1], hp, ":")
    host = bus[2] != "" ? bus[2] : substr(at[1], 1, length(at[1]) - length(hp[n]) - 1)
    print host ":" hp[n] }}'
}}
# Every master's DBSIZE, summed; the marker is not counted.
held() {{
  sum=0
  for node in $(masters); do
    size=$(on "$node" dbsize) || return 1
    sum=$((sum + size))
  done
  [ -z "$(marker)" ] || sum=$((sum - 1))
  echo "$sum"
}}
marker() {{ dst get "$MARKER" | tr -d '\\r'; }}
note() {{ echo "redis import: $*" >&2; }}
{PAUSE_SOURCE}
deadline=$(( $(date +%s) + {ready_seconds} ))
until SEED=$(seed); do
  [ "$(date +%s)" -lt "$deadline" ] ||
    refuse "the target cluster ($SEEDS) is not formed after {ready_seconds} s;" \\
      "the source is untouched"
  say "waiting for the target cluster to form"
  sleep 2
done
UNTOUCHED="the source is untouched"
state=$(marker)
retry=0
case "$state" in
  imported*)
    if refuse_writes 2> /dev/null; then
      say "$state (an earlier run); the source's master refuses writes; nothing to do"
    else
      say "$state (an earlier run); the source does not answer; nothing to do"
    fi
    exit 0
    ;;
  copying*) retry=1 ;;
  "")
    keys=$(held) || refuse "a master of the target cluster does not answer; $UNTOUCHED"
    [ "$keys" = 0 ] || refuse "the target cluster holds $keys key(s) of its own and no" \\
      "import from the source was started: nothing is copied into it; $UNTOUCHED"
    ;;
  *) refuse "the target's $MARKER holds '$state', not written by this import; $UNTOUCHED" ;;
esac
info=$(src info replication) ||
  refuse "the source's master $SOURCE_HOST:$SOURCE_PORT does not answer; $UNTOUCHED"
[ "$(printf '%s\\n' "$info" | field role)" = master ] ||
  refuse "$SOURCE_HOST:$SOURCE_PORT is not the source's master (a failover there?); $UNTOUCHED"
others=$(src info keyspace | grep -c '^db[1-9]' || true)
[ "$others" = 0 ] ||
  refuse "the source holds keys in $others database(s) besides 0; a Redis Cluster has" \\
    "database 0 alone; $UNTOUCHED"
mark() {{ [ "$(dst set "$MARKER" "$1")" = OK ]; }}
mark "copying from $SOURCE_HOST:$SOURCE_PORT since $(date -u +%Y-%m-%dT%H:%M:%SZ)" ||
  refuse "the target's master of $MARKER does not take writes; $UNTOUCHED"

mkdir -p "$WORK"
trap 'status=$?; thaw_source; rm -rf "$WORK"; exit $status' EXIT
trap 'exit 1' INT TERM HUP

pause_source {pause_ms}
started=$(now_ms)
expected=$(src dbsize)
say "writes paused on the source ($expected keys)"

if [ "$retry" = 1 ]; then
  # An earlier run stopped part-way: what it copied of keys since deleted goes.
  pruned=0
  for node in $(masters); do
    timeout {copy_seconds} {cli} --no-auth-warning -h "${{node%:*}}" -p "${{node##*:}}" \\
      --scan --no-raw | awk -v marker='"'"$MARKER"'"' \\
      '$0 != marker {{ print "ECHO " $0; print "EXISTS " $0 }}' |
      timeout {copy_seconds} {cli} --no-auth-warning -h "$SOURCE_HOST" -p "$SOURCE_PORT" --no-raw |
      awk 'NR % 2 == 1 {{ key = $0; next }} $0 == "(integer) 0" {{ print "DEL " key }}' \\
      > "$WORK/prune"
    count=$(wc -l < "$WORK/prune")
    if [ "$count" -gt 0 ]; then
      timeout {copy_seconds} {cli} --no-auth-warning -h "${{node%:*}}" -p "${{node##*:}}" \\
        < "$WORK/prune" > /dev/null
      pruned=$((pruned + count))
    fi
  done
  say "an earlier run stopped part-way: $pruned key(s) the source no longer holds removed"
fi

# One pass: key, payload and TTL of every key, then RESTORE on the master owning its slot.
timeout {copy_seconds} {cli} --no-auth-warning -h "$SOURCE_HOST" -p "$SOURCE_PORT" \\
  --scan --no-raw |
  awk '{{ print "ECHO " $0; print "DUMP " $0; print "PTTL " $0 }}' |
  timeout {copy_seconds} {cli} --no-auth-warning -h "$SOURCE_HOST" -p "$SOURCE_PORT" --no-raw |
  awk -v counts="$WORK/emitted" -v short={short_ms} '
    NR % 3 == 1 {{ key = $0; next }}
    NR % 3 == 2 {{ payload = $0; next }}
    {{
      scanned++
      ttl = $2
      if (payload == "(nil)" || ttl == -2) {{ gone++; next }}
      if (ttl < 0) ttl = 0
      if (ttl > 0 && ttl < short) brief++
      print "RESTORE " key " " ttl " " payload " REPLACE"
      sent++
    }}
    END {{ print scanned + 0, sent + 0, gone + 0, brief + 0 > counts }}' |
  timeout {copy_seconds} {cli} --no-auth-warning -c -h "${{SEED%:*}}" -p "${{SEED##*:}}" --no-raw |
  awk -v errors="$WORK/errors" '
    /^-> Redirected/ {{ next }}
    $0 == "OK" {{ ok++; next }}
    {{ failed++; print > errors; exit }}
    END {{ print ok + 0, failed + 0 }}' > "$WORK/restored" || true
# The first key the target refuses ends the pass (the stages before it end on the closed
# pipe): the source's writes are not held for the rest of a copy that is refused anyway.
seconds=$(( ($(now_ms) - started) / 1000 ))
read -r ok failed < "$WORK/restored" || refuse "the copy did not run"
if [ "$failed" -gt 0 ]; then
  refuse "the target refused a key ($(cat "$WORK/errors")) after $ok; not imported"
fi
read -r scanned sent gone brief < "$WORK/emitted" || refuse "the copy did not run"
[ "$ok" = "$sent" ] ||
  refuse "$ok of $sent key(s) restored in $seconds s (over {copy_seconds} s?); not imported"
have=$(held) || refuse "a master of the target cluster does not answer; not imported"
want=$((expected - gone))
if [ "$have" -gt "$want" ] || [ "$have" -lt $((want - brief)) ]; then
  refuse "the target holds $have key(s), the source $want ($brief with a TTL shorter" \\
    "than the copy); not imported"
fi
mark "imported from $SOURCE_HOST:$SOURCE_PORT at $(date -u +%Y-%m-%dT%H:%M:%SZ): $have keys" ||
  refuse "the target's master of $MARKER does not take writes; not imported"
handed_over=1
thaw_source
held_ms=$(( $(now_ms) - started ))
say "$sent key(s) copied ($scanned scanned, $gone expired meanwhile), the target holds $have;" \\
  "writes were paused for $held_ms ms; the source's master refuses writes"
"""
