"""Start scripts of the PostgreSQL containers (official `postgres` image), and the SQL the
primary applies before it accepts clients.

At every start, before the server listens, the primary runs :func:`startup_sql` in
single-user mode: the passwords in the environment are applied to the database (a rotated
secret takes effect at the next start), the replication role exists whatever the first
start looked like, and slots of replicas the phase no longer has are dropped so that they
stop holding WAL. Replicas bootstrap once with ``pg_basebackup``, then always start with a
``primary_conninfo`` that reads the replication password from a passfile on a tmpfs, so a
rotated replication password reaches them too. No password ever appears in a file of the
image, a rendered file or a process argument.
"""

from __future__ import annotations

from collections.abc import Sequence

from scaling.render.postgres import REPLICATION_USER, SLOT_PREFIX

# Prints its argument as a SQL string literal (single quotes doubled).
SQL_LITERAL_SH = """sql_literal() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }"""
# Prints $REPLICATION_PASSWORD escaped for a .pgpass field (backslash and colon escaped).
PGPASS_ESCAPE_SH = """pgpass_field() { printf '%s' "$1" | sed 's/[\\\\:]/\\\\&/g'; }"""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def startup_sql(
    user: str, password: str, replication_password: str | None, keep_slots: Sequence[str]
) -> str:
    """The statements the primary runs at start (single-user mode, ``-j``: a statement ends
    with a semicolon and an empty line)."""
    statements = [f"ALTER ROLE {_ident(user)} WITH LOGIN PASSWORD {_literal(password)};"]
    if replication_password is not None:
        statements += [
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = "
            f"{_literal(REPLICATION_USER)}) THEN CREATE ROLE {REPLICATION_USER} "
            "WITH REPLICATION LOGIN; END IF; END $$;",
            f"ALTER ROLE {REPLICATION_USER} WITH REPLICATION LOGIN "
            f"PASSWORD {_literal(replication_password)};",
        ]
    kept = ", ".join(_literal(slot) for slot in keep_slots) or "''"
    statements.append(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots"
        f" WHERE slot_name LIKE {_literal(SLOT_PREFIX + '%')} AND NOT active"
        f" AND slot_name NOT IN ({kept});"
    )
    return "".join(f"{statement}\n\n" for statement in statements)


def startup_sql_sh(user: str, *, replication: bool, keep_slots: Sequence[str]) -> str:
    """Shell printing ``startup_sql(user, $POSTGRES_PASSWORD, $REPLICATION_PASSWORD, …)``
    (needs :data:`SQL_LITERAL_SH`); a test holds the two byte for byte equal."""
    # The SQL is Python-rendered with marker passwords, then the markers become shell
    # substitutions: the statements themselves are written once.
    pw, rpw = "\x00PW\x00", "\x00RPW\x00"
    text = startup_sql(user, pw, rpw if replication else None, keep_slots)
    text = text.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")
    text = text.replace(_literal(pw), '$(sql_literal "$POSTGRES_PASSWORD")')
    text = text.replace(_literal(rpw), '$(sql_literal "$REPLICATION_PASSWORD")')
    return f"cat <<SQL\n{text}SQL"


def primary_start_script(
    conf: str, user: str, *, replication: bool, keep_slots: Sequence[str]
) -> str:
    """Runs as root in the official image: applies :func:`startup_sql` to an initialised
    data directory, then hands over to the image's entrypoint (first start: initdb)."""
    return f"""\
set -eu
{SQL_LITERAL_SH}
startup_sql() {{
{startup_sql_sh(user, replication=replication, keep_slots=keep_slots)}
}}
if [ -s "$PGDATA/PG_VERSION" ]; then
  startup_sql | gosu postgres postgres --single -j -D "$PGDATA" -c config_file={conf} \\
    postgres > /dev/null
fi
exec docker-entrypoint.sh postgres -c config_file={conf}
"""


def replica_start_script(conf: str, passfile: str) -> str:
    """Runs as the postgres user: bootstraps an empty volume from the primary, makes sure
    its slot exists, and starts as a hot standby streaming through that slot."""
    return f"""\
set -eu
umask 077
{PGPASS_ESCAPE_SH}
printf '%s:%s:*:{REPLICATION_USER}:%s\\n' "$PRIMARY_HOST" "$PRIMARY_PORT" \\
  "$(pgpass_field "$REPLICATION_PASSWORD")" > {passfile}
printf '%s:%s:postgres:{REPLICATION_USER}:%s\\n' "$PRIMARY_HOST" "$PRIMARY_PORT" \\
  "$(pgpass_field "$REPLICATION_PASSWORD")" >> {passfile}
export PGPASSFILE={passfile}
until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do sleep 1; done
query() {{
  psql -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U {REPLICATION_USER} -d postgres -tAc "$1"
}}
slots="SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$REPLICATION_SLOT'"
if [ "$(query "$slots")" = 0 ]; then
  query "SELECT pg_create_physical_replication_slot('$REPLICATION_SLOT')" > /dev/null
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U {REPLICATION_USER} -D "$PGDATA" \\
    --wal-method=stream --checkpoint=fast --slot="$REPLICATION_SLOT"
  chmod 0700 "$PGDATA"
fi
touch "$PGDATA/standby.signal"
exec postgres -c config_file={conf} \\
  -c "primary_conninfo=host=$PRIMARY_HOST port=$PRIMARY_PORT user={REPLICATION_USER} \\
passfile={passfile} application_name=$NODE_NAME" \\
  -c "primary_slot_name=$REPLICATION_SLOT"
"""
