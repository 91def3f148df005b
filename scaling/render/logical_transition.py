"""A transition into Citus by logical replication: the scripts the Kubernetes Jobs run.

A sharded (Citus) target cannot be a physical standby of a plain source (StackGres's
``replicateFrom`` maps coordinator and shards one to one onto a sharded source), so the rows
move by logical replication into the coordinator, then are distributed:

1. :func:`follow_script` (``sikka:promoteFrom``, no cut-over): on the source, a publication
   ``FOR ALL TABLES``; the source's schema (``pg_dump --schema-only``) restored on the
   coordinator in one transaction, every table a plain local table there; a subscription
   ``WITH (copy_data = true)`` on the coordinator. It refuses (before publishing anything) a
   source whose tables lack a replica identity: with a publication ``FOR ALL TABLES`` their
   UPDATEs and DELETEs would fail on the source itself.
2. :func:`cutover_script` (``sikka:promoteCutover: true``): stops the source's writes
   (``ALTER SYSTEM SET default_transaction_read_only = on``, reloaded, every client session
   but Patroni's ended) unless they are stopped already, and refuses unless no session
   holds a write transaction there and the subscription has applied everything up to the
   source's current LSN (a bounded wait): the source then takes writes again if this run
   had stopped them;
   checks the distribution columns against the coordinator's tables; sets every sequence
   past the source's value (logical replication carries no sequence); drops the
   subscription (and with it the source's slot) and the publication; distributes the tables
   with Citus's non-blocking ``create_distributed_table_concurrently`` (writes go on) and
   makes the reference tables.

Both scripts are POSIX sh over ``psql``/``pg_dump`` (the phase's PostgreSQL image has them),
safe to run again: the coordinator's database carries the transition's state in a
database-level setting (``sikka.transition``: ``following``, ``cut-over``), a subscription
already made is kept, a schema already restored is checked, and a table already distributed
is left alone. Passwords come from the environment (Secrets) into a pgpass file in a
private scratch folder; none is ever on a command line or in the output. The subscription
logs in as its own role on the source (``sikka_transition``: LOGIN REPLICATION and
``pg_read_all_data``, nothing more) with a password the follow Job draws for it; its
connection string holds that password (PostgreSQL keeps it in ``pg_subscription``, readable
by superusers alone) until the cut-over drops the subscription and the role. The sessions
that set or write it turn statement logging off for themselves.

The environment both scripts read: ``SOURCE_HOST``, ``SOURCE_PORT``, ``SOURCE_DATABASE``,
``SOURCE_USER``, ``SOURCE_PASSWORD`` (a superuser of the source), the same five ``TARGET_*``
for the coordinator, ``WORK_DIR`` (scratch, default /tmp), ``READY_SECONDS`` (how long to
wait for the servers), ``CATCH_UP_SECONDS`` (the cut-over's bounded wait) and
``REQUIRE_CITUS`` (1: a coordinator without the citus extension fails the cut-over; 0: the
distribution is skipped, and the log says so).

Pure: text from the phase's values, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scaling.model import PhaseSpec
from scaling.render.cutover import FREEZE_SOURCE

PUBLICATION = "sikka_transition"
SUBSCRIPTION = "sikka_transition"
# The subscription's login on the source (created by the follow Job, dropped at the cut-over).
LOGIN_ROLE = "sikka_transition"
# The coordinator database's setting that records how far the transition went.
STATE_SETTING = "sikka.transition"
FOLLOWING = "following"
CUT_OVER = "cut-over"
# What both scripts require (they refuse to start without any of them).
ENVIRONMENT = (
    "SOURCE_HOST",
    "SOURCE_PORT",
    "SOURCE_DATABASE",
    "SOURCE_USER",
    "SOURCE_PASSWORD",
    "TARGET_HOST",
    "TARGET_PORT",
    "TARGET_DATABASE",
    "TARGET_USER",
    "TARGET_PASSWORD",
)
READY_SECONDS = 900
CATCH_UP_SECONDS = 120

# Tables of the application: every schema but PostgreSQL's own (and extensions' objects).
_USER_TABLES = """
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND NOT c.relispartition
   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                      AND d.deptype = 'e')"""

_PRELUDE = r"""#!/bin/sh
# sikka-scaling: a transition into Citus by logical replication (rendered by
# scaling/render/logical_transition.py; the README's "Moving to the next phase").
set -eu
for variable in @@ENVIRONMENT@@; do
  eval "value=\${$variable:-}"
  if [ -z "$value" ]; then
    echo "REFUSED: $variable is not set" >&2
    exit 2
  fi
done
WORK_DIR="${WORK_DIR:-/tmp}"
READY_SECONDS="${READY_SECONDS:-@@READY@@}"
CATCH_UP_SECONDS="${CATCH_UP_SECONDS:-@@CATCH_UP@@}"
REQUIRE_CITUS="${REQUIRE_CITUS:-1}"
umask 077
SCRATCH=$(mktemp -d "$WORK_DIR/sikka-transition.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
# Passwords reach libpq through a pgpass file only (printf and the functions are the shell's
# own: no process ever sees a password on its command line).
pgpass_field() { printf '%s' "$1" | sed 's/[\\:]/\\&/g'; }
{
  printf '%s:%s:*:%s:%s\n' "$(pgpass_field "$SOURCE_HOST")" "$SOURCE_PORT" \
    "$(pgpass_field "$SOURCE_USER")" "$(pgpass_field "$SOURCE_PASSWORD")"
  printf '%s:%s:*:%s:%s\n' "$(pgpass_field "$TARGET_HOST")" "$TARGET_PORT" \
    "$(pgpass_field "$TARGET_USER")" "$(pgpass_field "$TARGET_PASSWORD")"
} > "$SCRATCH/pgpass"
PGPASSFILE="$SCRATCH/pgpass"
export PGPASSFILE
unset SOURCE_PASSWORD TARGET_PASSWORD
PGAPPNAME=sikka-transition
PGCONNECT_TIMEOUT=5
export PGAPPNAME PGCONNECT_TIMEOUT
SOURCE="host=$SOURCE_HOST port=$SOURCE_PORT dbname=$SOURCE_DATABASE user=$SOURCE_USER"
TARGET="host=$TARGET_HOST port=$TARGET_PORT dbname=$TARGET_DATABASE user=$TARGET_USER"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*"; }
refuse() { log "REFUSED: $*" >&2; exit 1; }
src() { psql -X -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY=terse -d "$SOURCE" "$@"; }
dst() { psql -X -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY=terse -d "$TARGET" "$@"; }
wait_ready() {  # wait_ready src|dst what
  waited=0
  until "$1" -c 'SELECT 1' >/dev/null 2>"$SCRATCH/ready.err"; do
    if [ "$waited" -ge "$READY_SECONDS" ]; then
      cat "$SCRATCH/ready.err" >&2
      refuse "the $2 did not answer within ${READY_SECONDS}s"
    fi
    sleep 2
    waited=$((waited + 2))
  done
}
state() {
  dst -c "SELECT coalesce(nullif(current_setting('@@STATE@@', true), ''), 'none')"
}
subscribed() {
  dst -c "SELECT count(*) FROM pg_catalog.pg_subscription WHERE subname = '@@SUB@@'
            AND subdbid = (SELECT oid FROM pg_catalog.pg_database
                            WHERE datname = current_database())"
}
"""

_FOLLOW = r"""
log "follow: source $SOURCE_HOST:$SOURCE_PORT/$SOURCE_DATABASE" \
  "-> coordinator $TARGET_HOST:$TARGET_PORT/$TARGET_DATABASE"
wait_ready src source
wait_ready dst coordinator
case "$(state)" in
  @@CUT_OVER@@)
    log "the coordinator was already cut over: nothing to follow"
    exit 0 ;;
esac

level=$(src -c "SHOW wal_level")
[ "$level" = logical ] || refuse "the source runs wal_level=$level: logical replication needs \
wal_level=logical (StackGres's default; set it in the source's SGPostgresConfig)"

# A publication FOR ALL TABLES makes UPDATE and DELETE fail on a table without a replica
# identity: refuse before publishing anything.
missing=$(src -c "SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', '
                                 ORDER BY n.nspname, c.relname)
@@USER_TABLES@@
   AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (
         SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))")
[ -z "$missing" ] || refuse "tables without a primary key or replica identity: $missing \
(add a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL, on the source)"

src <<'SQL'
SET default_transaction_read_only = off;
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = '@@PUB@@') THEN
    CREATE PUBLICATION @@PUB@@ FOR ALL TABLES;
  END IF;
END
$$;
SQL
total=$(src -c "SELECT count(*) FROM pg_catalog.pg_publication_tables WHERE pubname = '@@PUB@@'")
[ "$total" -gt 0 ] || refuse "the source has no table to move"
log "source: publication @@PUB@@ covers $total table(s)"

if [ "$(subscribed)" -gt 0 ]; then
  dst -c "ALTER SUBSCRIPTION @@SUB@@ ENABLE" > /dev/null
  dst -c "ALTER DATABASE \"$TARGET_DATABASE\" SET @@STATE@@ = '@@FOLLOWING@@'" > /dev/null
  log "coordinator: subscription @@SUB@@ already made; tables by state:" \
    "$(dst -c "SELECT string_agg(srsubstate::text || '=' || n, ' ')
                 FROM (SELECT srsubstate, count(*) n
                 FROM pg_catalog.pg_subscription_rel r JOIN pg_catalog.pg_subscription s
                   ON s.oid = r.srsubid WHERE s.subname = '@@SUB@@' GROUP BY 1) t")"
  exit 0
fi

# Which of the source's tables the coordinator has (SQL written by the source, run there).
src -c "SELECT 'SELECT count(*) FILTER (WHERE to_regclass(t) IS NOT NULL) FROM (VALUES '
               || string_agg(format('(%L)', format('%I.%I', schemaname, tablename)), ', ')
               || ') AS v(t)'
          FROM pg_catalog.pg_publication_tables WHERE pubname = '@@PUB@@'" > "$SCRATCH/present.sql"
present=$(dst -f "$SCRATCH/present.sql")
if [ "$present" -eq 0 ]; then
  # The owners of the tables must exist on the coordinator (the application's role comes
  # with the cluster's SGScript, which may still be running): wait for them.
  src -c "SELECT 'SELECT string_agg(r, '', '') FROM (VALUES '
                 || string_agg(DISTINCT format('(%L)', pg_catalog.pg_get_userbyid(c.relowner)),
                               ', ')
                 || ') AS v(r) WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r)'
          @@USER_TABLES@@" > "$SCRATCH/owners.sql"
  waited=0
  while roles=$(dst -f "$SCRATCH/owners.sql") && [ -n "$roles" ]; do
    [ "$waited" -lt "$READY_SECONDS" ] || refuse "the coordinator has no role $roles, which \
owns tables on the source: create it there (the application's role comes with the phase)"
    sleep 2
    waited=$((waited + 2))
  done
  pg_dump --schema-only --no-publications --no-subscriptions -d "$SOURCE" -f "$SCRATCH/schema.sql"
  dst --single-transaction -f "$SCRATCH/schema.sql" > /dev/null
  log "coordinator: the source's schema restored ($total table(s), local tables for now)"
elif [ "$present" -eq "$total" ]; then
  src -c "SELECT 'SELECT count(*) FROM ('
                 || string_agg(format('(SELECT 1 FROM %I.%I LIMIT 1)', schemaname, tablename),
                               ' UNION ALL ')
                 || ') AS t'
            FROM pg_catalog.pg_publication_tables WHERE pubname = '@@PUB@@'" > "$SCRATCH/rows.sql"
  filled=$(dst -f "$SCRATCH/rows.sql")
  [ "$filled" -eq 0 ] || refuse "$filled of the coordinator's tables already hold rows and no \
subscription fills them: the initial copy would collide with them"
  log "coordinator: the schema is there already (an earlier run restored it)"
else
  refuse "the coordinator has $present of the source's $total tables: restore the rest or drop \
them before following"
fi

"""


_SUBSCRIBE = r"""
# The subscription logs in as its own role on the source: LOGIN REPLICATION, reading every
# table (pg_read_all_data) and nothing more, with a password drawn here for this subscription
# alone (gen_random_uuid: PostgreSQL's strong random source). The sessions that set it and
# write it into the connection string log no statement; psql is given the variables' names
# only, so it prints no value.
SUBSCRIPTION_PASSWORD=$(src -c "SELECT replace(gen_random_uuid()::text
                                              || gen_random_uuid()::text, '-', '')")
export SUBSCRIPTION_PASSWORD
src <<'SQL' > /dev/null
\getenv login_password SUBSCRIPTION_PASSWORD
SET default_transaction_read_only = off;
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET log_min_error_statement = 'panic';
SELECT pg_catalog.set_config(name, 'off', false) FROM pg_catalog.pg_settings
 WHERE name = 'pg_stat_statements.track_utility';
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '@@LOGIN@@') THEN
    CREATE ROLE @@LOGIN@@;
  END IF;
END
$$;
ALTER ROLE @@LOGIN@@ WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
  PASSWORD :'login_password';
GRANT pg_read_all_data TO @@LOGIN@@;
SQL
log "source: role @@LOGIN@@ (LOGIN REPLICATION, pg_read_all_data) for the subscription"
dst <<'SQL' > /dev/null
\getenv source_host SOURCE_HOST
\getenv source_port SOURCE_PORT
\getenv source_database SOURCE_DATABASE
\getenv login_password SUBSCRIPTION_PASSWORD
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET log_min_error_statement = 'panic';
SELECT pg_catalog.set_config(name, 'off', false) FROM pg_catalog.pg_settings
 WHERE name = 'pg_stat_statements.track_utility';
SELECT format('host=%s port=%s dbname=%s user=@@LOGIN@@ password=%s application_name=@@SUB@@',
              v[1], v[2], v[3], v[4]) AS conninfo
  FROM (SELECT array_agg('''' || replace(replace(x, '\', '\\'), '''', '\''') || '''' ORDER BY i)
          FROM unnest(ARRAY[:'source_host', :'source_port', :'source_database',
                            :'login_password']) WITH ORDINALITY AS u(x, i)) AS quoted(v)
\gset
CREATE SUBSCRIPTION @@SUB@@ CONNECTION :'conninfo' PUBLICATION @@PUB@@
  WITH (copy_data = true);
SQL
unset SUBSCRIPTION_PASSWORD
dst -c "ALTER DATABASE \"$TARGET_DATABASE\" SET @@STATE@@ = '@@FOLLOWING@@'" > /dev/null
log "coordinator: subscription @@SUB@@ made (copy_data = true): the rows follow the source"
"""


def _fill(text: str, **values: str) -> str:
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", value)
    return text


def _common(text: str) -> str:
    return _fill(
        text,
        READY=str(READY_SECONDS),
        CATCH_UP=str(CATCH_UP_SECONDS),
        STATE=STATE_SETTING,
        SUB=SUBSCRIPTION,
        PUB=PUBLICATION,
        FOLLOWING=FOLLOWING,
        CUT_OVER=CUT_OVER,
        USER_TABLES=_USER_TABLES,
        LOGIN=LOGIN_ROLE,
        ENVIRONMENT=" ".join(ENVIRONMENT),
    )


def follow_script() -> str:
    """The following Job's script (step 1 of the module's description)."""
    return _common(_PRELUDE + _FOLLOW + _SUBSCRIBE)


def qualified(table: str) -> tuple[str, str]:
    """``"orders"`` → ``("public", "orders")``; ``"app.orders"`` → ``("app", "orders")``."""
    schema, _, name = table.rpartition(".")
    return (schema or "public", name)


def regclass(table: str) -> str:
    """The table as a quoted name for ``'...'::regclass`` (names are validated lowercase)."""
    schema, name = qualified(table)
    return f'"{schema}"."{name}"'


def distribution_checks(columns: Mapping[str, str], reference: Sequence[str]) -> str:
    """One query listing, a line each, what the coordinator's tables lack for the
    distribution asked (none: every table is there and every column may distribute it)."""
    rows = [f"('{regclass(t)}', '{c}')" for t, c in sorted(columns.items())]
    rows += [f"('{regclass(t)}', NULL)" for t in sorted(reference)]
    if not rows:
        return ""
    return f"""SELECT problem FROM (
  SELECT CASE
    WHEN to_regclass(t) IS NULL THEN t || ': no such table on the coordinator'
    WHEN col IS NULL THEN NULL
    WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = to_regclass(t) AND a.attname = col
                        AND a.attnum > 0 AND NOT a.attisdropped)
      THEN t || ': no column ' || col
    WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_index i
                      WHERE i.indrelid = to_regclass(t) AND i.indisprimary)
      THEN t || ': no primary key (create_distributed_table_concurrently needs one)'
    ELSE (SELECT string_agg(t || ': unique index ' || i.indexrelid::regclass::text
                            || ' does not include ' || col, '; ')
            FROM pg_catalog.pg_index i
           WHERE i.indrelid = to_regclass(t) AND i.indisunique
             AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                              WHERE a.attrelid = i.indrelid AND a.attname = col
                                AND a.attnum = ANY (i.indkey::int2[])))
  END AS problem
  FROM (VALUES {", ".join(rows)}) AS v(t, col)
) AS checked WHERE problem IS NOT NULL"""


def distribution_statements(columns: Mapping[str, str], reference: Sequence[str]) -> list[str]:
    """The Citus calls, reference tables first (distributed tables' foreign keys may point at
    them); each skips a table Citus already knows, so running them again changes nothing."""

    def unless_known(call: str, table: str) -> str:
        return (
            f"SELECT {call} WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition "
            f"WHERE logicalrelid = '{regclass(table)}'::regclass)"
        )

    statements = [
        unless_known(f"create_reference_table('{regclass(t)}')", t) for t in sorted(reference)
    ]
    statements += [
        unless_known(f"create_distributed_table_concurrently('{regclass(t)}', '{c}')", t)
        for t, c in sorted(columns.items())
    ]
    return statements


_CUTOVER = r"""
log "cut-over: source $SOURCE_HOST:$SOURCE_PORT/$SOURCE_DATABASE" \
  "-> coordinator $TARGET_HOST:$TARGET_PORT/$TARGET_DATABASE"
wait_ready src source
wait_ready dst coordinator
if [ "$(state)" != @@CUT_OVER@@ ]; then
  [ "$(subscribed)" -gt 0 ] || refuse "the coordinator has no subscription @@SUB@@: the rows \
do not follow the source (run the first step, sikka:promoteFrom without promoteCutover)"
  # The source's writes stop here (unless stopped already); a refusal before the point of
  # no return gives them back, if this run had stopped them.
  note() { log "source: $*" >&2; }
@@FREEZE@@
  trap 'status=$?; thaw_source; rm -rf "$SCRATCH"; exit $status' EXIT
  trap 'exit 1' INT TERM HUP
  freeze_source
  frozen() {
    readonly=$(src -c "SHOW default_transaction_read_only")
    [ "$readonly" = on ] || refuse "the source takes writes again (default_transaction_read_only \
is $readonly): something reset it during the cut-over"
    writers=$(src -c "SELECT count(*) FROM pg_catalog.pg_stat_activity
                       WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
                         AND backend_xid IS NOT NULL")
    [ "$writers" -eq 0 ] || refuse "$writers session(s) on the source still hold a write \
transaction: end them (pg_terminate_backend) before the cut-over"
  }
  frozen
  slot=$(dst -c "SELECT subslotname FROM pg_catalog.pg_subscription WHERE subname = '@@SUB@@'")
  lsn=$(src -c "SELECT pg_current_wal_lsn()")
  log "source frozen at LSN $lsn; waiting (at most ${CATCH_UP_SECONDS}s) for the coordinator"
  waited=0
  while :; do
    copying=$(dst -c "SELECT count(*) FROM pg_catalog.pg_subscription_rel r
                        JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid
                       WHERE s.subname = '@@SUB@@' AND r.srsubstate <> 'r'")
    behind=$(src -c "SELECT coalesce((SELECT pg_wal_lsn_diff('$lsn', confirmed_flush_lsn)
                                        FROM pg_catalog.pg_replication_slots
                                       WHERE slot_name = '$slot'), -1)")
    if [ "$copying" -eq 0 ] && [ "$behind" -le 0 ] && [ "$behind" != -1 ]; then
      break
    fi
    if [ "$waited" -ge "$CATCH_UP_SECONDS" ]; then
      refuse "the coordinator has not applied the source's LSN $lsn within \
${CATCH_UP_SECONDS}s ($copying table(s) still copying, $behind byte(s) behind; slot $slot): \
nothing was changed, run the cut-over again"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  frozen
  log "coordinator: every table copied, the source's LSN $lsn applied (${waited}s)"
  # The point of no return: the coordinator becomes the primary copy, the source stays
  # read-only whatever happens next.
  froze=0
  @@CHECKS@@
  # Sequences are not replicated: each goes past the source's value (never backwards).
  src -c "SELECT format('SELECT pg_catalog.setval(%L, greatest(%s, '
                        '(SELECT last_value FROM %I.%I)), true);',
                        format('%I.%I', schemaname, sequencename), last_value,
                        schemaname, sequencename)
            FROM pg_catalog.pg_sequences
           WHERE last_value IS NOT NULL AND schemaname <> 'information_schema'
             AND schemaname NOT LIKE 'pg\_%'" > "$SCRATCH/sequences.sql"
  dst -f "$SCRATCH/sequences.sql" > /dev/null
  sequences=$(grep -c setval "$SCRATCH/sequences.sql" || true)
  log "coordinator: $sequences sequence(s) set past the source's values"
  dst -c "ALTER DATABASE \"$TARGET_DATABASE\" SET @@STATE@@ = '@@CUT_OVER@@'" > /dev/null
fi
# From here on the coordinator is the primary copy: every step is safe to run again.
if [ "$(subscribed)" -gt 0 ]; then
  dst -c "DROP SUBSCRIPTION @@SUB@@" > /dev/null
  log "coordinator: subscription @@SUB@@ dropped (and its slot on the source)"
fi
src -c "SET default_transaction_read_only = off" -c "DROP PUBLICATION IF EXISTS @@PUB@@" \
  > /dev/null
src -c "SET default_transaction_read_only = off" -c "DROP ROLE IF EXISTS @@LOGIN@@" \
  > /dev/null
log "source: publication @@PUB@@ and role @@LOGIN@@ dropped; the source stays read-only"
citus=$(dst -c "SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = 'citus'")
if [ "$citus" -eq 0 ]; then
  if [ "$REQUIRE_CITUS" = 1 ]; then
    refuse "the coordinator has no citus extension: the tables stay local (the rows are all \
there and the source is no longer followed); CREATE EXTENSION citus and run this again"
  fi
  log "SKIPPED: the coordinator has no citus extension (REQUIRE_CITUS=0): no table distributed"
else
@@DISTRIBUTE@@
fi
log "cut-over done@@LOCAL@@"
"""


def cutover_script(spec: PhaseSpec) -> str:
    """The cut-over Job's script (step 2 of the module's description), with the phase's
    ``postgres.distributionColumns`` and ``postgres.referenceTables``."""
    pg = spec.postgres
    columns, reference = dict(pg.distribution_columns), list(pg.reference_tables)
    query = distribution_checks(columns, reference)
    if query:
        checks = (
            f"problems=$(dst <<'SQL'\n{query}\nSQL\n)\n"
            '  [ -z "$problems" ] || refuse "the distribution asked (postgres.distributionColumns, '
            'postgres.referenceTables) does not fit the tables: $problems"'
        )
    else:
        checks = ": # no distribution asked (postgres.distributionColumns is empty)"
    distribute = [
        f"  dst <<'SQL' > /dev/null\n{statement};\nSQL\n  log \"citus: {what}\""
        for statement, what in zip(
            distribution_statements(columns, reference),
            [f"{t} is a reference table" for t in sorted(reference)]
            + [f"{t} distributed by {c} (concurrently)" for t, c in sorted(columns.items())],
            strict=True,
        )
    ] or ['  log "citus: no table to distribute (postgres.distributionColumns is empty)"']
    local = (
        "; every table not named in postgres.distributionColumns or postgres.referenceTables "
        "stays a local table on the coordinator"
    )
    return _fill(
        _common(_PRELUDE + _CUTOVER),
        CHECKS=checks,
        FREEZE=FREEZE_SOURCE,
        DISTRIBUTE="\n".join(distribute),
        LOCAL=local,
    )
