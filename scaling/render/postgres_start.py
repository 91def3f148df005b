"""Start scripts of the PostgreSQL containers (official `postgres` image), and the SQL the
primary applies before it accepts clients.

Roles (least privilege): the superuser is ``postgres`` (the image's ``POSTGRES_USER``, with
its own secret, admitted by pg_hba over the socket and loopback only); the application role
(``postgres.user``) logs in and owns its database and that database's ``public`` schema,
nothing more (no SUPERUSER, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS, no membership in
any role); ``replicator`` only replicates; where exporters read the server, the monitoring
role (``sikka_monitor``) logs in to the ``postgres`` database and holds ``pg_monitor`` alone
(PostgreSQL's read-only statistics role), with at most a few connections.

At every start, before the server listens, the primary runs :func:`startup_sql` (on the
``postgres`` database) and :func:`database_sql` (on the application's) in single-user mode:
the roles get exactly these attributes whatever an older deployment left (an application
role that was the image's superuser is demoted, see :func:`startup_sql`), the passwords in
the environment are applied (a rotated secret takes effect at the next start), and slots of
replicas the phase no longer has are dropped so that they stop holding WAL. At the first
start the image's init script (:func:`init_roles_script`) applies the same SQL through psql.
Under Patroni the leader's role script (scaling.render.patroni) applies the same SQL, and
Patroni's members read the replication password from their environment. No password ever
appears in a file of the image, a rendered file or a process argument.
"""

from __future__ import annotations

from collections.abc import Sequence

from scaling.model import MONITORING_USER, REWIND_USER, SUPERUSER
from scaling.render.postgres import REPLICATION_USER, SLOT_PREFIX

# Prints its argument as a SQL string literal (single quotes doubled).
SQL_LITERAL_SH = """sql_literal() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }"""

# The container's environment variables holding each password: the image's own
# POSTGRES_PASSWORD is the superuser's (POSTGRES_USER=postgres).
SUPERUSER_PASSWORD_ENV = "POSTGRES_PASSWORD"
# The application role's SCRAM verifier (scaling.render.scram), which the start-up SQL sets
# as its password: PgBouncer's auth file holds the same one (SCRAM pass-through).
APP_VERIFIER_ENV = "DATABASE_PASSWORD_SCRAM"
REPLICATION_PASSWORD_ENV = "REPLICATION_PASSWORD"
REWIND_PASSWORD_ENV = "REWIND_PASSWORD"
# The monitoring role's SCRAM verifier, set the same way: PgBouncer's auth file holds the same
# one for its stats_users login (the exporters keep the password, on the client side).
MONITORING_VERIFIER_ENV = "MONITORING_PASSWORD_SCRAM"

# Exactly what the application role may do: log in. Everything else is said explicitly, so
# that ALTER ROLE takes away what an older deployment gave.
APP_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
REPLICATION_ROLE_ATTRIBUTES = "LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"
REWIND_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
# The exporters' role: log in, read the statistics (pg_monitor), hold at most a few of the
# server's connections (one exporter keeps one open).
MONITORING_ROLE_ATTRIBUTES = (
    "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT 3"
)
MONITORING_GRANT = "pg_monitor"
# What pg_rewind calls on its source server (PostgreSQL's documentation of pg_rewind).
REWIND_FUNCTIONS = (
    "pg_ls_dir(text, boolean, boolean)",
    "pg_stat_file(text, boolean)",
    "pg_read_binary_file(text)",
    "pg_read_binary_file(text, bigint, bigint, boolean)",
)
# A superuser that exists only for the instant it takes to rename the bootstrap superuser.
_RENAMER = "sikka_rename_bootstrap_superuser"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ensure_role(name: str) -> str:
    return (
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = "
        f"{_literal(name)}) THEN CREATE ROLE {_ident(name)}; END IF; END $$;"
    )


def revoke_memberships_sql(name: str) -> str:
    """Revokes every role the given role is a member of (whoever granted it): a role that
    holds nothing can inherit nothing, e.g. pg_execute_server_program or a superuser."""
    return (
        "DO $$ DECLARE m record; BEGIN FOR m IN SELECT g.rolname AS granted, "
        "gr.rolname AS grantor FROM pg_catalog.pg_auth_members a "
        "JOIN pg_catalog.pg_roles g ON g.oid = a.roleid "
        "LEFT JOIN pg_catalog.pg_roles gr ON gr.oid = a.grantor "
        f"WHERE a.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {_literal(name)})"
        " LOOP IF m.grantor IS NULL THEN "
        f"EXECUTE format('REVOKE %I FROM %I', m.granted, {_literal(name)}); ELSE "
        f"EXECUTE format('REVOKE %I FROM %I GRANTED BY %I', m.granted, {_literal(name)}, "
        "m.grantor); END IF; END LOOP; END $$;"
    )


def startup_sql(
    user: str,
    *,
    superuser_password: str,
    password: str,
    replication_password: str | None,
    keep_slots: Sequence[str],
    monitoring_password: str | None = None,
) -> str:
    """The cluster-wide statements the primary runs at start, on the ``postgres`` database
    (single-user mode, ``-j``: a statement ends with a semicolon and an empty line; psql
    reads the same text). ``password``: the application role's SCRAM verifier, which
    PostgreSQL stores as it is (PgBouncer's auth file holds the same one);
    ``monitoring_password``, likewise, the monitoring role's verifier.

    An older deployment initialised the volume with the application role as the image's
    superuser, i.e. as the bootstrap superuser: the owner of every system catalog, which
    PostgreSQL 16+ also refuses to demote. So the bootstrap superuser is renamed ``postgres``
    (through a superuser that exists for that statement only, as a session cannot rename
    itself) and the application role is created anew with least privilege;
    :func:`database_sql` hands it its database's objects. (Were a role ``postgres`` already
    there besides the bootstrap superuser, the rename fails, the start reports the error and
    the old role stays a superuser: rename or drop that role by hand.)
    """
    statements = [
        "DO $$ BEGIN IF (SELECT rolname FROM pg_catalog.pg_authid WHERE oid = 10) <> "
        f"{_literal(SUPERUSER)} THEN CREATE ROLE {_RENAMER} SUPERUSER; "
        f"SET SESSION AUTHORIZATION {_RENAMER}; EXECUTE format('ALTER ROLE %I RENAME TO %I', "
        f"(SELECT rolname FROM pg_catalog.pg_authid WHERE oid = 10), {_literal(SUPERUSER)}); "
        f"SET SESSION AUTHORIZATION {_ident(SUPERUSER)}; DROP ROLE {_RENAMER}; END IF; END $$;",
        f"ALTER ROLE {_ident(SUPERUSER)} WITH SUPERUSER LOGIN "
        f"PASSWORD {_literal(superuser_password)};",
        _ensure_role(user),
        f"ALTER ROLE {_ident(user)} WITH {APP_ROLE_ATTRIBUTES} PASSWORD {_literal(password)};",
        revoke_memberships_sql(user),
    ]
    if replication_password is not None:
        statements += [
            _ensure_role(REPLICATION_USER),
            f"ALTER ROLE {_ident(REPLICATION_USER)} WITH {REPLICATION_ROLE_ATTRIBUTES} "
            f"PASSWORD {_literal(replication_password)};",
            revoke_memberships_sql(REPLICATION_USER),
        ]
    else:
        # A phase without replicas leaves no replication login behind.
        statements.append(
            "DO $$ BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = "
            f"{_literal(REPLICATION_USER)}) THEN ALTER ROLE {_ident(REPLICATION_USER)} "
            "WITH NOLOGIN; END IF; END $$;"
        )
    if monitoring_password is not None:
        statements += monitoring_role_statements(monitoring_password)
    kept = ", ".join(_literal(slot) for slot in keep_slots) or "''"
    statements.append(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots"
        f" WHERE slot_name LIKE {_literal(SLOT_PREFIX + '%')} AND NOT active"
        f" AND slot_name NOT IN ({kept});"
    )
    return "".join(f"{statement}\n\n" for statement in statements)


# Objects of the application's database that the superuser owns while the database itself is
# still the superuser's (a fresh volume, or one an older deployment made with the
# application role as superuser), outside the system schemas and extensions, with the
# statement that hands each one to the application role. Sequences owned by a column follow
# their table; other object kinds (operators, collations, large objects, ...) stay as they are.
_USER_SCHEMA = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
)
_NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = {catalog}::regclass "
    "AND d.objid = {oid} AND d.deptype = 'e')"
)
_OWNED_OBJECTS = (
    "SELECT format('ALTER SCHEMA %I OWNER TO %I', n.nspname, $1) FROM pg_catalog.pg_namespace n"
    f" WHERE n.nspowner = $2 AND {_USER_SCHEMA} AND "
    + _NOT_EXTENSION_MEMBER.format(catalog="'pg_catalog.pg_namespace'", oid="n.oid")
    + " UNION ALL SELECT format('ALTER %s %s OWNER TO %I', CASE c.relkind WHEN 'v' THEN 'VIEW'"
    " WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'"
    " ELSE 'TABLE' END, c.oid::regclass, $1) FROM pg_catalog.pg_class c JOIN"
    " pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relowner = $2 AND"
    f" c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {_USER_SCHEMA} AND "
    + _NOT_EXTENSION_MEMBER.format(catalog="'pg_catalog.pg_class'", oid="c.oid")
    + " AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid ="
    " 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.refclassid ="
    " 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i'))"
    " UNION ALL SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, $1) FROM"
    " pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE"
    f" p.proowner = $2 AND {_USER_SCHEMA} AND "
    + _NOT_EXTENSION_MEMBER.format(catalog="'pg_catalog.pg_proc'", oid="p.oid")
    + " UNION ALL SELECT format('ALTER %s %s OWNER TO %I', CASE t.typtype WHEN 'd' THEN"
    " 'DOMAIN' ELSE 'TYPE' END, t.oid::regtype, $1) FROM pg_catalog.pg_type t JOIN"
    " pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.typowner = $2 AND"
    " (t.typtype IN ('d', 'e', 'r') OR (t.typtype = 'c' AND (SELECT c.relkind FROM"
    " pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')) AND "
    f"{_USER_SCHEMA} AND "
    + _NOT_EXTENSION_MEMBER.format(catalog="'pg_catalog.pg_type'", oid="t.oid")
)


def monitoring_role_statements(password: str) -> list[str]:
    """The monitoring role with exactly :data:`MONITORING_ROLE_ATTRIBUTES` and membership in
    ``pg_monitor`` alone (whatever an older deployment granted it is revoked first)."""
    return [
        _ensure_role(MONITORING_USER),
        f"ALTER ROLE {_ident(MONITORING_USER)} WITH {MONITORING_ROLE_ATTRIBUTES} "
        f"PASSWORD {_literal(password)};",
        revoke_memberships_sql(MONITORING_USER),
        f"GRANT {MONITORING_GRANT} TO {_ident(MONITORING_USER)};",
    ]


def rewind_role_sql(password: str) -> str:
    """Patroni's pg_rewind role: it lets a former leader rewind itself from the new one, with
    its login, least privilege, password and the functions pg_rewind calls and nothing
    more. Patroni creates it only when it bootstraps a cluster; a cluster it took over from
    a plain primary gets it from here (and a rotated password with it)."""
    statements = [
        _ensure_role(REWIND_USER),
        f"ALTER ROLE {_ident(REWIND_USER)} WITH {REWIND_ROLE_ATTRIBUTES} "
        f"PASSWORD {_literal(password)};",
        *(
            f"GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO {_ident(REWIND_USER)};"
            for function in REWIND_FUNCTIONS
        ),
    ]
    return "".join(f"{statement}\n\n" for statement in statements)


def database_sql(user: str, database: str) -> str:
    """The statements the primary runs at start on the application's database (no secret
    in them): the application role owns the database and its ``public`` schema, and takes
    over what the superuser owned there while the database was the superuser's."""
    superuser_oid = f"(SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {_literal(SUPERUSER)})"
    statements = [
        "DO $$ DECLARE statement text; BEGIN IF (SELECT datdba FROM pg_catalog.pg_database "
        f"WHERE datname = current_database()) = {superuser_oid} THEN FOR statement IN EXECUTE "
        f"{_literal(_OWNED_OBJECTS)} USING {_literal(user)}::text, {superuser_oid} "
        "LOOP EXECUTE statement; END LOOP; END IF; END $$;",
        f"ALTER DATABASE {_ident(database)} OWNER TO {_ident(user)};",
        "DO $$ BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'public') "
        f"THEN ALTER SCHEMA public OWNER TO {_ident(user)}; END IF; END $$;",
    ]
    return "".join(f"{statement}\n\n" for statement in statements)


# Markers standing for the passwords in the Python-rendered SQL, and the shell substitution
# each one becomes (statements are written once, in Python).
_SU, _PW, _RPW, _RWD = "\x00SU\x00", "\x00PW\x00", "\x00RPW\x00", "\x00RWD\x00"
_MON = "\x00MON\x00"
_MARKERS = {
    _SU: SUPERUSER_PASSWORD_ENV,
    _PW: APP_VERIFIER_ENV,
    _RPW: REPLICATION_PASSWORD_ENV,
    _RWD: REWIND_PASSWORD_ENV,
    _MON: MONITORING_VERIFIER_ENV,
}


def _heredoc(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")
    for marker, variable in _MARKERS.items():
        text = text.replace(_literal(marker), f'$(sql_literal "${variable}")')
    return f"cat <<SQL\n{text}SQL"


def startup_sql_sh(
    user: str, *, replication: bool, keep_slots: Sequence[str], monitoring: bool = False
) -> str:
    """Shell printing :func:`startup_sql` with the passwords of ``$POSTGRES_PASSWORD``
    (superuser), ``$DATABASE_PASSWORD_SCRAM`` (the application role's verifier),
    ``$REPLICATION_PASSWORD`` and, with ``monitoring``, ``$MONITORING_PASSWORD_SCRAM`` (the
    monitoring role's verifier) (needs :data:`SQL_LITERAL_SH`); a test holds the two byte for
    byte equal."""
    return _heredoc(
        startup_sql(
            user,
            superuser_password=_SU,
            password=_PW,
            replication_password=_RPW if replication else None,
            keep_slots=keep_slots,
            monitoring_password=_MON if monitoring else None,
        )
    )


def database_sql_sh(user: str, database: str) -> str:
    """Shell printing :func:`database_sql` (byte for byte, a test holds it)."""
    return _heredoc(database_sql(user, database))


def rewind_role_sql_sh() -> str:
    """Shell printing :func:`rewind_role_sql` with the password of ``$REWIND_PASSWORD``."""
    return _heredoc(rewind_role_sql(_RWD))


def sql_functions_sh(
    user: str,
    database: str,
    *,
    replication: bool,
    keep_slots: Sequence[str],
    rewind: bool = False,
    monitoring: bool = False,
) -> str:
    """Shell functions printing the start-up SQL: ``startup_sql``, ``database_sql`` and, for
    Patroni's leaders, ``rewind_sql``."""
    functions = f"""\
{SQL_LITERAL_SH}
startup_sql() {{
{startup_sql_sh(user, replication=replication, keep_slots=keep_slots, monitoring=monitoring)}
}}
database_sql() {{
{database_sql_sh(user, database)}
}}"""
    if rewind:
        functions += f"\nrewind_sql() {{\n{rewind_role_sql_sh()}\n}}"
    return functions


def primary_start_script(
    conf: str,
    user: str,
    database: str,
    *,
    replication: bool,
    keep_slots: Sequence[str],
    monitoring: bool = False,
) -> str:
    """Runs as root in the official image: applies :func:`startup_sql` and
    :func:`database_sql` to an initialised data directory, then hands over to the image's
    entrypoint (first start: initdb, then :func:`init_roles_script`)."""
    single = f'gosu postgres postgres --single -j -D "$PGDATA" -c config_file={conf}'
    functions = sql_functions_sh(
        user, database, replication=replication, keep_slots=keep_slots, monitoring=monitoring
    )
    return f"""\
set -eu
{functions}
if [ -s "$PGDATA/PG_VERSION" ]; then
  startup_sql | {single} postgres > /dev/null
  database_sql | {single} {_ident(database)} > /dev/null
fi
exec docker-entrypoint.sh postgres -c config_file={conf}
"""


def init_roles_script(
    user: str,
    database: str,
    *,
    replication: bool,
    keep_slots: Sequence[str],
    monitoring: bool = False,
) -> str:
    """The image runs this once, when it initialises the volume (docker-entrypoint-initdb.d,
    as the superuser ``$POSTGRES_USER`` against its temporary socket-only server, after
    creating ``$POSTGRES_DB``): the same SQL as every later start, through psql."""
    psql = 'psql -v ON_ERROR_STOP=1 -q --no-psqlrc --username "$POSTGRES_USER"'
    functions = sql_functions_sh(
        user, database, replication=replication, keep_slots=keep_slots, monitoring=monitoring
    )
    return f"""\
#!/bin/sh
# Runs once, when the primary's volume is initialised: the roles with least privilege, and
# the application role owning its database. Later starts apply the same SQL (primary-start.sh).
# (The image sources a script that is not executable: no `set -u` leaks into its entrypoint.)
set -e
{functions}
startup_sql | {psql} --dbname postgres
database_sql | {psql} --dbname "$POSTGRES_DB"
"""
