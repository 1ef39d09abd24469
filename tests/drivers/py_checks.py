#!/usr/bin/env python3
"""Real-driver checks for Python: PyMySQL and mysql-connector-python (pure
Python and its C extension). Run by tests/tests/drivers.rs with the virtualenv
scripts/install-deps.sh makes (tests/drivers/.venv):

    tests/drivers/.venv/bin/python tests/drivers/py_checks.py \
        --driver pymysql|connector-pure|connector-cext [--prefix P] \
        [--only CHECK]... [--skip CHECK]... HOST PORT USER PASSWORD DB

Prints one JSON object per check, one a line:

    {"check": NAME, "result": ...}        what the check saw
    {"check": NAME, "error": [CODE, MSG]}  the check itself broke

A step inside a check that gets a server error records it as
{"error": [CODE, MSG]} in its place in the result, so that the same script run
against MariaDB directly and through Sluice can be compared check by check
(the server is the oracle). Nothing printed depends on the connection (ids,
timings): those are reduced to booleans.

Tables and routines: PREFIX_* (PREFIX defaults to drv_<driver>).
"""

import argparse
import datetime
import decimal
import hashlib
import json
import random
import sys
import threading
import time
import traceback
import uuid

CHECKS = []


def check(fn):
    CHECKS.append((fn.__name__.removeprefix("check_"), fn))
    return fn


# ---------------------------------------------------------------- drivers


class Driver:
    """What the checks need from a driver; one subclass per driver."""

    has_prepared = False

    def __init__(self, args):
        self.args = args

    def base(self, **over):
        kw = dict(
            host=self.args.host,
            port=self.args.port,
            user=self.args.user,
            password=self.args.password,
            database=self.args.database,
            charset="utf8mb4",
            autocommit=True,
        )
        kw.update(over)
        if kw.get("database") is None:
            kw.pop("database")
        return kw

    def query(self, conn, sql, params=None, prepared=False):
        """Runs one statement; its rows (a list of tuples, [] for none)."""
        cur = self.cursor(conn, prepared)
        try:
            cur.execute(sql, params)
            # Column types as the driver sees them (type codes).
            self.last_types = [d[1] for d in cur.description] if cur.description else None
            rows = cur.fetchall() if cur.description else []
            return [tuple(r) for r in rows]
        finally:
            cur.close()

    def scalar(self, conn, sql, params=None, prepared=False):
        rows = self.query(conn, sql, params, prepared)
        return rows[0][0]


class PyMySQL(Driver):
    name = "pymysql"

    def __init__(self, args):
        super().__init__(args)
        import pymysql

        self.m = pymysql
        self.Error = pymysql.err.MySQLError

    def connect(self, **over):
        # PyMySQL refuses to send more than max_allowed_packet (16 MiB by default).
        kw = self.base(max_allowed_packet=64 * 1024 * 1024, **over)
        attrs = kw.pop("conn_attrs", None)
        if attrs:
            kw["program_name"] = attrs["program_name"]
        return self.m.connect(**kw)

    def cursor(self, conn, prepared):
        assert not prepared, "PyMySQL has no server-side prepared statements"
        return conn.cursor()

    def error(self, e):
        if isinstance(e, self.Error) and len(e.args) >= 2 and isinstance(e.args[0], int):
            return [e.args[0], str(e.args[1])]
        return None

    def thread_id(self, conn):
        return conn.thread_id()

    def insert_id(self, cur):
        return cur.lastrowid

    def warning_count(self, conn, cur):
        return conn._result.warning_count

    def begin(self, conn):
        conn.begin()

    def in_transaction(self, conn):
        # PyMySQL keeps the last OK/EOF packet's status flags.
        return bool(conn.server_status & 1)

    def autocommit_flag(self, conn):
        return bool(conn.server_status & 2)


class Connector(Driver):
    has_prepared = True

    def __init__(self, args, use_pure):
        super().__init__(args)
        import mysql.connector

        self.m = mysql.connector
        self.Error = mysql.connector.Error
        self.use_pure = use_pure
        self.name = "connector-pure" if use_pure else "connector-cext"
        if not use_pure and not mysql.connector.HAVE_CEXT:
            raise SystemExit(
                "mysql-connector-python has no C extension here (HAVE_CEXT is false): "
                "run scripts/install-deps.sh"
            )

    def connect(self, **over):
        kw = self.base(use_pure=self.use_pure, **over)
        conn = self.m.connect(**kw)
        want = mysql_connection_type(self.m, self.use_pure)
        assert isinstance(conn, want), f"{type(conn).__name__} is not {want.__name__}"
        return conn

    def cursor(self, conn, prepared):
        if prepared:
            return conn.cursor(prepared=True)
        return conn.cursor(buffered=True)

    def error(self, e):
        if isinstance(e, self.Error) and e.errno is not None:
            return [e.errno, str(e.msg)]
        return None

    def thread_id(self, conn):
        return conn.connection_id

    def insert_id(self, cur):
        return cur.lastrowid

    def warning_count(self, conn, cur):
        return cur.warning_count

    def begin(self, conn):
        conn.start_transaction()

    def in_transaction(self, conn):
        return bool(conn.in_transaction)

    def autocommit_flag(self, conn):
        return None


def mysql_connection_type(m, use_pure):
    if use_pure:
        from mysql.connector.connection import MySQLConnection

        return MySQLConnection
    from mysql.connector.connection_cext import CMySQLConnection

    return CMySQLConnection


# ---------------------------------------------------------------- helpers

D = None  # the Driver in use
P = None  # table/routine prefix


def norm(v):
    """A value as 'type:text', so that the driver's type shows in the output."""
    t = type(v).__name__
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        if len(v) > 64:
            return f"{t}:len={len(v)},md5={hashlib.md5(v).hexdigest()}"
        return f"{t}:{bytes(v).hex()}"
    if isinstance(v, (datetime.date, datetime.datetime, datetime.time)):
        return f"{t}:{v.isoformat()}"
    if isinstance(v, (decimal.Decimal, datetime.timedelta, float, int, bool, str, set)):
        return f"{t}:{v}"
    return f"{t}:{v!r}"


def norm_rows(rows):
    return [[norm(v) for v in r] for r in rows]


def step(fn):
    """Runs one step of a check: its value, or {"error": [code, msg]} when
    the server (or the driver on its behalf) refused it."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - any driver error is a result here
        err = D.error(e)
        if err is None:
            err = [None, f"{type(e).__name__}: {e}"]
        return {"error": err}


def close(conn):
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass


def q(conn, sql, params=None, prepared=False):
    return D.query(conn, sql, params, prepared)


def one(conn, sql, params=None, prepared=False):
    return D.scalar(conn, sql, params, prepared)


def typed(conn, sql, params=None, prepared=False):
    """Rows and the result's column type codes (drivers decode by them)."""
    rows = norm_rows(q(conn, sql, params, prepared))
    return {"rows": rows, "types": D.last_types}


# ---------------------------------------------------------------- checks


SELECT_TYPES = (
    "SELECT 1 AS i, -9223372036854775808 AS big, 18446744073709551615 AS ubig, "
    "'abc' AS s, 1.50 AS d, 2.5e0 AS f, NULL AS n, DATE '2024-02-29' AS dt, "
    "TIMESTAMP '2024-02-29 12:34:56.789' AS ts, TIME '-12:34:56' AS tm, "
    "x'00ff' AS bin, 'ünï🐬' AS u, CAST(7 AS UNSIGNED) AS un, 1 = 1 AS b"
)


@check
def check_select_types():
    c = D.connect()
    out = {"text": step(lambda: norm_rows(q(c, SELECT_TYPES)))}
    if D.has_prepared:
        out["prepared"] = step(lambda: norm_rows(q(c, SELECT_TYPES + ", %s AS p", (7,), prepared=True)))
    out["text_param"] = step(lambda: norm_rows(q(c, "SELECT %s, %s, %s, %s", (7, "x'y", b"\x00\xff", None))))
    close(c)
    return out


@check
def check_prepared_params():
    c = D.connect()
    t = f"{P}_pp"
    q(c, f"DROP TABLE IF EXISTS {t}")
    q(c, f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, n BIGINT, s VARCHAR(100), "
         "b BLOB, f DOUBLE, dt DATETIME(3), maybe INT NULL) CHARACTER SET utf8mb4")
    rows = [
        (2**63 - 1, "it's \"quoted\" \\ ünïcödé 🐬", bytes(range(256)), 1.25,
         datetime.datetime(2024, 2, 29, 12, 34, 56, 789000), None),
        (-(2**63), "", b"", -0.5, datetime.datetime(1999, 12, 31, 23, 59, 59), 3),
    ]
    out = {}
    for how in ["prepared", "text"] if D.has_prepared else ["text"]:
        prepared = how == "prepared"

        def insert_and_read():
            q(c, f"DELETE FROM {t}")
            for r in rows:
                q(c, f"INSERT INTO {t} (n, s, b, f, dt, maybe) VALUES (%s, %s, %s, %s, %s, %s)", r, prepared)
            got = q(c, f"SELECT n, s, b, f, dt, maybe FROM {t} WHERE n > %s AND s LIKE %s ORDER BY id",
                    (-(2**63), "%ü%"), prepared)
            # Re-execute the same statement with other parameters.
            got2 = q(c, f"SELECT COUNT(*) FROM {t} WHERE maybe IS NULL OR maybe = %s", (3,), prepared)
            return {"rows": norm_rows(got), "count": norm_rows(got2)}

        out[how] = step(insert_and_read)
    close(c)
    return out


@check
def check_transaction():
    t = f"{P}_tx"
    c = D.connect()
    q(c, f"DROP TABLE IF EXISTS {t}")
    q(c, f"CREATE TABLE {t} (id INT PRIMARY KEY, s VARCHAR(20))")
    out = {}

    def explicit():
        r = {}
        D.begin(c)
        q(c, f"INSERT INTO {t} VALUES (1, 'rolled back')")
        r["in_trans"] = D.in_transaction(c)
        c.rollback()
        r["in_trans_after_rollback"] = D.in_transaction(c)
        r["after_rollback"] = one(c, f"SELECT COUNT(*) FROM {t}")
        D.begin(c)
        q(c, f"INSERT INTO {t} VALUES (2, 'committed')")
        c.commit()
        r["in_trans_after_commit"] = D.in_transaction(c)
        r["after_commit"] = one(c, f"SELECT COUNT(*) FROM {t}")
        r["autocommit_flag"] = D.autocommit_flag(c)
        return r

    out["explicit"] = step(explicit)

    # The drivers' own default: autocommit off, as an application would get it.
    def autocommit_off():
        r = {}
        a = D.connect(autocommit=False)
        try:
            r["autocommit"] = one(a, "SELECT @@autocommit")
            q(a, f"INSERT INTO {t} VALUES (3, 'ac off rollback')")
            r["in_trans"] = D.in_transaction(a)
            a.rollback()
            q(a, f"INSERT INTO {t} VALUES (4, 'ac off commit')")
            a.commit()
            r["seen_by_self"] = one(a, f"SELECT GROUP_CONCAT(id ORDER BY id) FROM {t}")
            a.commit()
        finally:
            close(a)
        return r

    out["autocommit_off"] = step(autocommit_off)
    out["final"] = step(lambda: norm_rows(q(c, f"SELECT id, s FROM {t} ORDER BY id")))
    close(c)
    return out


@check
def check_last_insert_id():
    t = f"{P}_lid"
    c = D.connect()
    q(c, f"DROP TABLE IF EXISTS {t}")
    q(c, f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    out = {}
    for how in ["text", "prepared"] if D.has_prepared else ["text"]:
        prepared = how == "prepared"

        def run():
            r = {}
            cur = D.cursor(c, prepared)
            cur.execute(f"INSERT INTO {t} (v) VALUES (%s)", (1,))
            r["driver_single"] = D.insert_id(cur)
            cur.close()
            r["sql_single"] = one(c, "SELECT LAST_INSERT_ID()")
            cur = D.cursor(c, prepared)
            cur.execute(f"INSERT INTO {t} (v) VALUES (%s), (%s), (%s)", (2, 3, 4))
            r["driver_multi"] = D.insert_id(cur)
            r["rowcount_multi"] = cur.rowcount
            cur.close()
            r["sql_multi"] = one(c, "SELECT LAST_INSERT_ID()")
            q(c, f"UPDATE {t} SET v = v + 1 WHERE id = %s", (1,), prepared)
            r["sql_after_update"] = one(c, "SELECT LAST_INSERT_ID()")
            return r

        out[how] = step(run)
    close(c)
    return out


@check
def check_no_schema():
    """A client that names no database sees none, whatever ran before on
    pooled connections."""
    out = []
    for _ in range(3):
        a = D.connect()
        one(a, "SELECT 1")
        close(a)
        b = D.connect(database=None)
        out.append(step(lambda: norm(one(b, "SELECT DATABASE()"))))
        close(b)
    return out


BLOB_BYTES = 20 * 1024 * 1024


@check
def check_blob_20mb():
    t = f"{P}_blob"
    data = random.Random(20).randbytes(BLOB_BYTES)
    md5 = hashlib.md5(data).hexdigest()
    c = D.connect()
    q(c, f"DROP TABLE IF EXISTS {t}")
    q(c, f"CREATE TABLE {t} (id INT PRIMARY KEY, b LONGBLOB)")
    close(c)
    out = {}
    for i, how in enumerate(["prepared", "text"] if D.has_prepared else ["text"]):
        prepared = how == "prepared"

        def run():
            r = {}
            c = D.connect()
            try:
                q(c, f"INSERT INTO {t} VALUES (%s, %s)", (i, data), prepared)
                length, server_md5 = q(c, f"SELECT LENGTH(b), MD5(b) FROM {t} WHERE id = %s", (i,), prepared)[0]
                r["length"] = length
                r["server_md5_ok"] = server_md5 == md5
                back = one(c, f"SELECT b FROM {t} WHERE id = %s", (i,), prepared)
                # (mysql-connector-python's pure binary protocol returns only
                # the first 16 MiB of a multi-packet value, directly too.)
                r["bytes_length"] = len(back)
                r["bytes_md5_ok"] = hashlib.md5(back).hexdigest() == md5
                r["after"] = one(c, "SELECT 1")
            finally:
                close(c)
            return r

        out[how] = step(run)
    c = D.connect()
    q(c, f"DROP TABLE IF EXISTS {t}")
    close(c)
    return out


@check
def check_proc_out_param():
    c = D.connect()
    p = f"{P}_p"
    q(c, f"DROP PROCEDURE IF EXISTS {p}")
    q(c, f"CREATE PROCEDURE {p}(IN a INT, OUT b INT) SET b = a * 2")
    out = {}

    def call():
        q(c, f"CALL {p}(5, @out)")
        return typed(c, "SELECT @out")

    out["call_out"] = step(call)
    out["select_into"] = step(lambda: (q(c, "SELECT 42 INTO @v"), norm(one(c, "SELECT @v")))[1])
    out["set_assign"] = step(lambda: (q(c, "SET @a := 7 + 1"), norm(one(c, "SELECT @a")))[1])

    def typed_vars():
        q(c, "SET @s := 'text', @dec := 1.25, @dbl := 0.5e0, @nul := NULL, @neg := -3")
        return typed(c, "SELECT @s, @dec, @dbl, @nul, @neg")

    out["typed"] = step(typed_vars)
    # Another statement in between, then all of them at once.
    out["all_later"] = step(lambda: (one(c, "SELECT 1"), norm_rows(q(c, "SELECT @out, @v, @a, @s, @dec")))[1])
    if D.has_prepared:
        def call_prepared():
            q(c, f"CALL {p}(%s, @out2)", (21,), prepared=True)
            return [norm(one(c, "SELECT @out2")), norm(one(c, "SELECT @out2", prepared=True))]

        out["call_prepared"] = step(call_prepared)
    close(c)
    return out


CHARSET_VARS = (
    "SELECT @@character_set_client, @@character_set_connection, "
    "@@character_set_results, @@collation_connection"
)


@check
def check_set_names():
    c = D.connect(charset="latin1")
    out = {"at_connect": step(lambda: norm_rows(q(c, CHARSET_VARS)))}
    q(c, "SET NAMES utf8mb4")
    after = []
    for i in range(3):
        after.append(step(lambda: (q(c, "SELECT %s", (i,)), norm_rows(q(c, CHARSET_VARS)))[1]))
    out["after_set_names"] = after
    q(c, "SET NAMES latin1 COLLATE latin1_bin")
    out["after_collate"] = step(lambda: (q(c, "DO 1"), norm_rows(q(c, CHARSET_VARS)))[1])
    close(c)
    return out


@check
def check_warnings():
    t = f"{P}_w"
    c = D.connect()
    out = {}
    q(c, "SET SESSION sql_mode = ''")
    q(c, f"DROP TABLE IF EXISTS {t}")
    q(c, f"CREATE TABLE {t} (c CHAR(2))")
    cur = D.cursor(c, False)
    cur.execute(f"INSERT INTO {t} VALUES ('abcdef'), ('xyz'), ('ok')")
    out["driver_warning_count"] = D.warning_count(c, cur)
    cur.close()
    # Longer than any hold of the connection that ran the INSERT.
    time.sleep(1)
    out["show_warnings"] = step(lambda: typed(c, "SHOW WARNINGS"))
    out["show_count"] = step(lambda: typed(c, "SHOW COUNT(*) WARNINGS"))
    out["warning_count"] = step(lambda: typed(c, "SELECT @@warning_count"))
    out["error_count"] = step(lambda: typed(c, "SELECT @@error_count"))

    def found_rows():
        q(c, f"SELECT SQL_CALC_FOUND_ROWS * FROM {t} LIMIT 1")
        time.sleep(0.3)
        return typed(c, "SELECT FOUND_ROWS()")

    out["found_rows"] = step(found_rows)

    def row_count():
        q(c, f"UPDATE {t} SET c = 'q' WHERE c LIKE 'a%'")
        time.sleep(0.3)
        # (mysql-connector-python pings before every cursor(), and a COM_PING
        # resets the server's ROW_COUNT() to 0: directly it reads 0.)
        return typed(c, "SELECT ROW_COUNT()")

    out["row_count"] = step(row_count)
    close(c)
    return out


@check
def check_read_after_write_new_conn():
    t = f"{P}_raw"
    a = D.connect()
    q(a, f"DROP TABLE IF EXISTS {t}")
    q(a, f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    counts = []
    for i in range(5):
        D.begin(a)
        q(a, f"INSERT INTO {t} (v) VALUES (%s), (%s)", (i, i))
        a.commit()
        b = D.connect()
        counts.append(step(lambda: norm(one(b, f"SELECT COUNT(*) FROM {t}"))))
        close(b)
    close(a)
    return counts


@check
def check_connection_id():
    c = D.connect()
    first = one(c, "SELECT CONNECTION_ID()")
    one(c, "SELECT 1")
    second = one(c, "SELECT CONNECTION_ID()")
    out = {"same": first == second, "equals_handshake": D.thread_id(c) == first}
    if D.has_prepared:
        third = one(c, "SELECT CONNECTION_ID()", prepared=True)
        out["prepared_same"] = third == first
    close(c)
    return out


@check
def check_kill_query():
    c1 = D.connect()
    c2 = D.connect()
    victim = one(c1, "SELECT CONNECTION_ID()")
    out = {}
    seen = {}

    def sleeper():
        t0 = time.monotonic()
        try:
            seen["outcome"] = ["rows", norm_rows(q(c1, "SELECT SLEEP(10)"))]
        except Exception as e:  # noqa: BLE001
            err = D.error(e)
            seen["outcome"] = ["error", err[0] if err else f"{type(e).__name__}: {e}"]
        seen["fast"] = time.monotonic() - t0 < 5

    th = threading.Thread(target=sleeper)
    th.start()
    time.sleep(0.5)
    kill = step(lambda: (q(c2, f"KILL QUERY {victim}"), "ok")[1])
    if isinstance(kill, dict):  # the message names the id, which differs between connections
        kill["error"][1] = kill["error"][1].replace(str(victim), "<victim>")
    out["kill"] = kill
    th.join()
    out["victim"] = seen
    out["victim_after"] = step(lambda: norm(one(c1, "SELECT 1")))
    out["unknown_id"] = step(lambda: (q(c2, "KILL QUERY 999999"), "ok")[1])

    # KILL <id> closes that client: its next statement fails (how depends on
    # timing, so only whether it fails is printed); the killer goes on.
    c3 = D.connect()
    third = one(c3, "SELECT CONNECTION_ID()")
    kill = step(lambda: (q(c2, f"KILL {third}"), "ok")[1])
    if isinstance(kill, dict):
        kill["error"][1] = kill["error"][1].replace(str(third), "<victim>")
    time.sleep(0.2)
    try:
        one(c3, "SELECT 1")
        fails = False
    except Exception:  # noqa: BLE001 - any error: the connection is gone
        fails = True
    out["kill_connection"] = {"kill": kill, "victim_fails": fails, "killer_after": step(lambda: norm(one(c2, "SELECT 1")))}
    close(c3)
    close(c1)
    close(c2)
    return out


@check
def check_conn_attrs():
    attrs = {"program_name": "sluice-test", "app_name": "sluice-test", "sluice_case": "drivers"}
    out = {}
    c = D.connect(conn_attrs=attrs)
    out["works"] = norm(one(c, "SELECT 1"))
    ps = one(c, "SELECT /* sluice:primary */ @@performance_schema")
    out["performance_schema"] = norm(ps)
    if ps:
        marker = f"{P}-attrs-{uuid.uuid4().hex}"
        # The backend connection that runs this very query, found by the
        # marker in its text (CONNECTION_ID() would be the client's own). The
        # hint (a comment to the server) keeps both reads on the primary in
        # split mode: the test topology has performance_schema only there.
        sql = (
            f"SELECT /* sluice:primary */ /* {marker} */ a.ATTR_NAME, a.ATTR_VALUE "
            "FROM performance_schema.session_connect_attrs a "
            "JOIN information_schema.PROCESSLIST p ON p.ID = a.PROCESSLIST_ID "
            f"WHERE p.INFO LIKE '%{marker}%' "
            "AND a.ATTR_NAME IN ('program_name', 'app_name', 'sluice_case') "
            "ORDER BY a.ATTR_NAME"
        )
        out["attrs"] = step(lambda: norm_rows(q(c, sql)))
    close(c)
    return out


# ---------------------------------------------------------------- main


def main():
    global D, P
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driver", required=True, choices=["pymysql", "connector-pure", "connector-cext"])
    ap.add_argument("--prefix")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--skip", action="append", default=[])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("user")
    ap.add_argument("password")
    ap.add_argument("database")
    args = ap.parse_args()
    names = [n for n, _ in CHECKS]
    for n in args.only + args.skip:
        if n not in names:
            ap.error(f"unknown check {n!r} (checks: {', '.join(names)})")
    if args.driver == "pymysql":
        D = PyMySQL(args)
    else:
        D = Connector(args, use_pure=args.driver == "connector-pure")
    P = args.prefix or "drv_" + args.driver.replace("-", "_")
    for name, fn in CHECKS:
        if (args.only and name not in args.only) or name in args.skip:
            continue
        try:
            line = {"check": name, "result": fn()}
        except Exception as e:  # noqa: BLE001
            err = D.error(e)
            if err is None:
                traceback.print_exc(file=sys.stderr)
                err = [None, f"{type(e).__name__}: {e}"]
            else:
                print(f"{name}: {err}", file=sys.stderr)
            line = {"check": name, "error": err}
        print(json.dumps(line, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
