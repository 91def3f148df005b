"""The cut-over's guards on Docker: one-shot shell scripts that stop writes on a transition's
source, wait until the target holds every acknowledged write, and only then promote it.

Pure text. The Docker stack runs them in one-shot containers at ``sikka:promoteCutover``
(scaling.topology); the integration test runs the same text against servers on loopback.

PostgreSQL (:func:`postgres_cutover_script`, in the Patroni image: ``psql``, ``curl``):

1. a member answers ``/primary``: promoted already (an earlier run), nothing to do;
   ``standby_cluster`` already gone from the cluster's configuration: only wait for the
   leader;
2. no standby leader answers: refused, the source untouched;
3. the source stops writes: ``ALTER SYSTEM SET default_transaction_read_only = on``,
   ``pg_reload_conf()``, a new session must see it, then every other client session is
   terminated (and waited for: a commit in flight is acknowledged or not before the LSN is
   read), then ``pg_current_wal_lsn()``;
4. bounded wait until the standby leader (Patroni's REST API, ``xlog.replayed_location``)
   has replayed that LSN; otherwise the source's setting is reset (it takes writes again)
   and the script exits 1 saying how far the target got;
5. the source's read-write door still leads to a read-only server (a Patroni source that
   failed over since the freeze would not): otherwise refused, as in 4;
6. ``standby_cluster`` removed through the REST API; success once a member answers
   ``/primary``. The source stays read-only from then on (its writes would be lost).

Redis (:func:`redis_cutover_script`, in the Redis image: ``redis-cli``):

1. the target's master is a master already: done (an earlier run);
2. its link to the source's master is not up: refused, the source untouched;
3. ``CLIENT PAUSE WRITE`` on the source's master (it expires by itself should the script
   die), bounded wait until the target's replication offset reaches the source's;
   otherwise ``CLIENT UNPAUSE`` and exit 1;
4. ``REPLICAOF NO ONE`` on the target's master, then wait until its AOF is settled (no
   rewrite in progress or scheduled: a graceful stop then keeps everything it received);
   the source's master then refuses writes (``min-replicas-to-write``, in memory: a
   restart of the source clears it) and is unpaused.

Passwords come from the environment alone (``PGPASSWORD`` for ``psql``, ``REDISCLI_AUTH``
for ``redis-cli``, curl's config on stdin for the REST API); nothing secret is printed.
"""

from __future__ import annotations

from collections.abc import Sequence

from scaling.render.endpoints import Endpoint

# How long the target may take to replay the source's last write once writes stopped: the
# write downtime is bounded by it (the source takes writes again when it runs out).
CATCH_UP_SECONDS = 60
# How long Redis writes may stay paused while the target catches up (CLIENT PAUSE WRITE
# expires by itself after PAUSE_MS, should the script die in between).
REDIS_CATCH_UP_SECONDS = 30
PAUSE_MS = (REDIS_CATCH_UP_SECONDS + 30) * 1000
# The source's master refuses writes after the cut-over: more good replicas than it has.
REFUSE_WRITES_REPLICAS = 1000
# Exit status of a refusal (the target is not promoted, the source takes writes again).
REFUSED = 1


# The source's write stop, shared by every PostgreSQL cut-over (Docker's guard, Kubernetes's
# standby guard, the logical cut-over Job). The including script defines ``src`` (psql on
# the source as a superuser), ``refuse`` (exit 1) and ``note`` (a line on stderr).
FREEZE_SOURCE = """\
# The source's writes stop: read-only by default (ALTER SYSTEM, reloaded; a new session must
# see it), then every client session but this one's and Patroni's ended and waited for, so
# that a commit in flight is acknowledged (and in the WAL position read next) or never.
# froze=1 when this run stopped them: thaw_source gives them back, unless froze was reset
# at the point of no return (the target holds the data from then on).
# Read-only already (stopped by hand, or by an earlier run): the sessions are ended all the
# same (one may still hold a write transaction begun before), and froze stays 0.
froze=0
freeze_source() {
  if [ "$(src -c 'SHOW default_transaction_read_only')" != on ]; then
    froze=1
    src -c 'ALTER SYSTEM SET default_transaction_read_only = on' \\
      -c 'SELECT pg_reload_conf()' > /dev/null
    tries=0
    until [ "$(src -c 'SHOW default_transaction_read_only')" = on ]; do
      tries=$((tries + 1))
      [ "$tries" -lt 50 ] || refuse "the source did not apply default_transaction_read_only"
      sleep 0.2
    done
  fi
  # The sessions of now; one that ends by itself meanwhile is as good (its PID then is no
  # backend's: pg_terminate_backend only warns). Each psql call is its own transaction, so
  # the last one reads pg_stat_activity afresh.
  pids=$(src -c "SELECT coalesce(string_agg(pid::text, ','), '')
    FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend'
     AND pid <> pg_backend_pid() AND application_name NOT LIKE 'Patroni%'")
  if [ -n "$pids" ]; then
    src -c "SELECT pg_terminate_backend(pid, 10000) FROM unnest('{$pids}'::int[]) AS pid" \\
      > /dev/null 2>&1 || true
    left=$(src -c "SELECT count(*) FROM pg_catalog.pg_stat_activity
      WHERE pid = ANY ('{$pids}'::int[])")
    [ "$left" = 0 ] || refuse "$left session(s) on the source did not end within 10 s"
  fi
  if [ "$froze" = 1 ]; then
    note "the source's writes are stopped (default_transaction_read_only on, sessions ended)"
  else
    note "the source was read-only already (not this run's doing); its sessions ended"
  fi
}
thaw_source() {
  [ "$froze" = 1 ] || return 0
  if src -c 'ALTER SYSTEM RESET default_transaction_read_only' \\
    -c 'SELECT pg_reload_conf()' > /dev/null; then
    note "the source takes writes again"
  else
    note "could not make the source writable again: run ALTER SYSTEM RESET" \\
      "default_transaction_read_only and SELECT pg_reload_conf() on it"
  fi
}
"""


# The standby guards' wait (Docker's and Kubernetes's): the source frozen, its last WAL
# position read, then at most $1 s until the including script's ``replayed`` (the
# target's replayed position, in bytes) reaches it; refused otherwise, the source given
# its writes back by the EXIT trap. Leaves ``lsn`` and ``at`` set. Needs FREEZE_SOURCE and
# ``say``.
CATCH_UP_FROZEN = """\
catch_up_frozen() {
  freeze_source
  lsn=$(src -c "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
  say "the source is read-only; its last WAL position is $lsn"
  deadline=$(( $(date +%s) + $1 ))
  while :; do
    at=$(replayed) || at=0
    [ "$at" -ge "$lsn" ] && break
    [ "$(date +%s)" -lt "$deadline" ] ||
      refuse "the target replayed up to $at of $lsn in $1 s: not promoted"
    sleep 0.5
  done
}
"""


# The source Redis master's write pause, shared by the Redis cut-over and the key import.
# The including script defines ``src`` (redis-cli on the source's master) and ``note``.
PAUSE_SOURCE = f"""\
# paused=1 while the source's writes are paused; handed_over=1 once the target holds them
# (from then on the source is unpaused only once it refuses writes: they would be lost).
paused=0
handed_over=0
pause_source() {{
  src client pause "$1" write > /dev/null
  paused=1
}}
refuse_writes() {{
  src config set min-replicas-to-write {REFUSE_WRITES_REPLICAS} > /dev/null
}}
thaw_source() {{
  [ "$paused" = 1 ] || return 0
  if [ "$handed_over" = 0 ]; then
    src client unpause > /dev/null && note "the source takes writes again"
  elif refuse_writes; then
    src client unpause > /dev/null || true
  else
    note "the source's writes stay paused until the pause expires"
  fi
  paused=0
}}
"""


def postgres_cutover_script(
    source: Endpoint | tuple[str, str | int],
    apis: Sequence[str],
    *,
    superuser: str,
    superuser_password_env: str,
    rest_user: str,
    rest_password_env: str,
    catch_up_seconds: int = CATCH_UP_SECONDS,
    promote_seconds: int = 180,
) -> str:
    """The PostgreSQL cut-over: ``source`` is the source's read-write door (host, port),
    ``apis`` the target members' REST APIs ("host:port"). The source's superuser password
    is read from ``$superuser_password_env`` (the target inherits it)."""
    host, port = (source.host, source.port) if isinstance(source, Endpoint) else source
    members = " ".join(apis)
    return f"""\
set -eu
SOURCE_HOST={host}
SOURCE_PORT={port}
APIS="{members}"
say() {{ echo "cut-over: $*"; }}
refuse() {{ echo "cut-over refused: $*" >&2; exit {REFUSED}; }}
# libpq reads the password from the environment: never on a command line, never printed.
PGPASSWORD="${superuser_password_env}"
export PGPASSWORD
export PGCONNECT_TIMEOUT=5 PGAPPNAME=sikka-cutover
src() {{
  psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$SOURCE_HOST" -p "$SOURCE_PORT" \\
    -U {superuser} -d postgres "$@"
}}
get() {{ curl -fsS --max-time 5 "http://$1" 2>/dev/null; }}
# The member that leads and takes writes. /primary alone is not enough: when its status
# query fails (a busy server mid-promotion) Patroni answers from the role it holds in
# memory, set before recovery has ended; its status shows xlog.location (the WAL position
# of a server out of recovery) only once pg_is_in_recovery() said false.
leader() {{
  for api in $APIS; do
    get "$api/primary" > /dev/null || continue
    if get "$api/patroni" | grep -q '"location": *[0-9]'; then echo "$api"; return 0; fi
  done
  return 1
}}
# The standby leader's replayed position, in bytes (Patroni's xlog.replayed_location).
replayed() {{
  for api in $APIS; do
    body=$(get "$api/standby-leader") || continue
    value=$(printf '%s' "$body" | sed -n 's/.*"replayed_location": *\\([0-9][0-9]*\\).*/\\1/p')
    [ -n "$value" ] && {{ echo "$value"; return 0; }}
  done
  return 1
}}
# yes / no: whether the cluster's configuration still holds standby_cluster.
standby_configured() {{
  for api in $APIS; do
    body=$(get "$api/config") || continue
    if printf '%s' "$body" | grep -q '"standby_cluster": *{{'; then echo yes; else echo no; fi
    return 0
  done
  return 1
}}
# The REST API's password goes to curl on stdin, never on its command line.
auth() {{
  printf 'user = "%s:%s"\\n' {rest_user} \\
    "$(printf '%s' "${rest_password_env}" | sed 's/[\\\\"]/\\\\&/g')"
}}
promote() {{
  for api in $APIS; do
    auth | curl -fsS --max-time 10 -o /dev/null -K - -X PATCH \\
      -H 'Content-Type: application/json' \\
      --data '{{"standby_cluster":null}}' "http://$api/config" && return 0
  done
  return 1
}}
wait_leader() {{
  deadline=$(( $(date +%s) + {promote_seconds} ))
  until api=$(leader); do
    [ "$(date +%s)" -lt "$deadline" ] || {{
      echo "cut-over: standby_cluster is removed but no member leads after {promote_seconds} s;" \\
        "run it again (the source stays read-only)" >&2
      exit 1
    }}
    sleep 1
  done
  say "$api leads: the target takes writes; the source stays read-only"
  exit 0
}}

if api=$(leader); then
  say "$api leads already: the target was promoted by an earlier run; nothing to do"
  exit 0
fi
UNTOUCHED="the source is untouched"
configured=$(standby_configured) ||
  refuse "no member of the target answers ($APIS); $UNTOUCHED"
if [ "$configured" = no ]; then
  say "standby_cluster was removed by an earlier run; waiting for the leader"
  wait_leader
fi
replayed > /dev/null || refuse "the target has no standby leader replicating yet; $UNTOUCHED"
recovery=$(src -c 'SELECT pg_is_in_recovery()') ||
  refuse "cannot log into the source $SOURCE_HOST:$SOURCE_PORT as {superuser}; $UNTOUCHED"
[ "$recovery" = f ] || refuse "the source $SOURCE_HOST:$SOURCE_PORT is a standby; $UNTOUCHED"

note() {{ echo "cut-over: $*" >&2; }}
{FREEZE_SOURCE}{CATCH_UP_FROZEN}trap 'status=$?; thaw_source; exit $status' EXIT
trap 'exit 1' INT TERM HUP

catch_up_frozen {catch_up_seconds}
say "the standby leader replayed $at (the source's last is $lsn)"

# The door leads to a server still read-only: a failover on the source (Patroni) since the
# freeze would have a new leader taking writes the target never sees.
[ "$(src -c 'SHOW default_transaction_read_only')" = on ] ||
  refuse "the source's read-write door leads to a writable server now (a failover there?):" \
    "not promoted; run it again"
stopped_here=$froze
froze=0
tries=0
until promote; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    # Still a standby everywhere: nothing was promoted, the source may take writes again.
    [ "$(standby_configured)" != yes ] || froze=$stopped_here
    refuse "no member of the target took the change"
  fi
  sleep 2
done
wait_leader
"""


def standby_guard_script(
    source: Endpoint | tuple[str, str | int],
    target: Endpoint,
    *,
    user_env: str = "SUPERUSER",
    password_env: str = "SUPERUSER_PASSWORD",
    catch_up_seconds: int = CATCH_UP_SECONDS,
) -> str:
    """Kubernetes: the guard before ``replicateFrom`` is removed (StackGres then promotes the
    standby leader itself). ``source`` is the source's primary, ``target`` the target
    cluster's primary Service (its standby leader until the promotion); both take the
    source's superuser (the target's users are the source's, ``replicateFrom.users``), whose
    name and password are read from ``$user_env`` and ``$password_env``.

    The target out of recovery already: done (an earlier run). Otherwise, with the target
    streaming from the source, the source's writes stop (:data:`FREEZE_SOURCE`) and the
    guard waits until the target has replayed the source's last WAL position; if it has not
    within ``catch_up_seconds`` the source takes writes again and the guard exits 1, before
    Pulumi touches the SGCluster. On success the source stays read-only."""
    host, port = (source.host, source.port) if isinstance(source, Endpoint) else source
    return f"""\
set -eu
PGPASSWORD="${password_env}"
export PGPASSWORD
export PGCONNECT_TIMEOUT=5 PGAPPNAME=sikka-cutover
say() {{ echo "cut-over: $*"; }}
note() {{ echo "cut-over: $*" >&2; }}
refuse() {{ echo "cut-over refused: $*" >&2; exit {REFUSED}; }}
psql_on() {{
  on_host=$1 on_port=$2
  shift 2
  psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$on_host" -p "$on_port" -U "${user_env}" \\
    -d postgres "$@"
}}
src() {{ psql_on {host} {port} "$@"; }}
dst() {{ psql_on {target.host} {target.port} "$@"; }}

UNTOUCHED="the source is untouched"
recovery=$(dst -c 'SELECT pg_is_in_recovery()') ||
  refuse "cannot log into the target {target.host}:{target.port}; $UNTOUCHED"
if [ "$recovery" = f ]; then
  say "the target is out of recovery already (an earlier run); nothing to do"
  exit 0
fi
streaming=$(dst -c "SELECT count(*) FROM pg_catalog.pg_stat_wal_receiver
  WHERE status = 'streaming'")
[ "$streaming" -gt 0 ] || refuse "the target does not stream from the source; $UNTOUCHED"
recovery=$(src -c 'SELECT pg_is_in_recovery()') ||
  refuse "cannot log into the source {host}:{port}; $UNTOUCHED"
[ "$recovery" = f ] || refuse "the source {host}:{port} is a standby; $UNTOUCHED"

# The target's replayed position, in bytes.
replayed() {{
  at=$(dst -c "SELECT coalesce(pg_last_wal_replay_lsn() - '0/0'::pg_lsn, 0)") || return 1
  echo "${{at%.*}}"
}}
{FREEZE_SOURCE}{CATCH_UP_FROZEN}trap 'status=$?; thaw_source; exit $status' EXIT
trap 'exit 1' INT TERM HUP

catch_up_frozen {catch_up_seconds}
froze=0
say "the target replayed $at (the source's last is $lsn): replicateFrom may go; the source" \\
  "stays read-only"
"""


def redis_cutover_script(
    source: Endpoint | tuple[str, str | int],
    target: Endpoint,
    *,
    cli: str = "redis-cli",
    password_env: str = "REDIS_PASSWORD",
    catch_up_seconds: int = REDIS_CATCH_UP_SECONDS,
) -> str:
    """The Redis cut-over: ``source`` is the source's master, ``target`` the target's master
    (which replicates it). One password for both (the target inherits the source's)."""
    host, port = (source.host, source.port) if isinstance(source, Endpoint) else source
    return f"""\
set -eu
REDISCLI_AUTH="${password_env}"
export REDISCLI_AUTH
say() {{ echo "redis cut-over: $*"; }}
refuse() {{ echo "redis cut-over refused: $*" >&2; exit {REFUSED}; }}
src() {{ timeout 10 {cli} --no-auth-warning -h {host} -p {port} "$@"; }}
dst() {{ timeout 10 {cli} --no-auth-warning -h {target.host} -p {target.port} "$@"; }}
field() {{ sed -n "s/^$1:\\([^[:space:]]*\\).*/\\1/p" | tr -d '\\r'; }}
settled() {{
  persistence=$(dst info persistence) || return 1
  [ "$(printf '%s\\n' "$persistence" | field loading)" = 0 ] &&
    [ "$(printf '%s\\n' "$persistence" | field aof_rewrite_in_progress)" = 0 ] &&
    [ "$(printf '%s\\n' "$persistence" | field aof_rewrite_scheduled)" = 0 ]
}}
wait_settled() {{
  tries=0
  until settled; do
    tries=$((tries + 1))
    [ "$tries" -lt 600 ] || {{
      echo "redis cut-over: the target's AOF is still being written" >&2
      exit 1
    }}
    sleep 1
  done
}}

UNTOUCHED="the source is untouched"
info=$(dst info replication) ||
  refuse "the target's master {target.host}:{target.port} does not answer; $UNTOUCHED"
if [ "$(printf '%s\\n' "$info" | field role)" = master ]; then
  wait_settled
  say "the target's master runs on its own already (an earlier run); nothing to do"
  exit 0
fi
[ "$(src info replication | field role)" = master ] ||
  refuse "{host}:{port} is not the source's master (a failover there?); $UNTOUCHED"
[ "$(printf '%s\\n' "$info" | field master_link_status)" = up ] ||
  refuse "the target's master is not in sync with the source's ({host}:{port}); $UNTOUCHED"

note() {{ echo "redis cut-over: $*" >&2; }}
{PAUSE_SOURCE}trap 'status=$?; thaw_source; exit $status' EXIT
trap 'exit 1' INT TERM HUP

pause_source {PAUSE_MS}
wanted=$(src info replication | field master_repl_offset)
say "writes paused on the source at offset $wanted"
deadline=$(( $(date +%s) + {catch_up_seconds} ))
while :; do
  at=$(dst info replication | field slave_repl_offset) || at=0
  [ -n "$at" ] || at=0
  [ "$at" -ge "$wanted" ] && break
  [ "$(date +%s)" -lt "$deadline" ] ||
    refuse "the target reached offset $at of $wanted in {catch_up_seconds} s: not promoted"
  sleep 1
done
handed_over=1
dst replicaof no one > /dev/null
say "the target's master runs on its own at offset $at"
# The source's master refuses writes from now on (in memory; a restart clears it).
thaw_source
say "the source's master refuses writes (min-replicas-to-write {REFUSE_WRITES_REPLICAS})"
wait_settled
say "the target's AOF is settled: its master may be replaced"
"""
