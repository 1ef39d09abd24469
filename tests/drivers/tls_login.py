"""One login with a Python driver, as tests/tests/tls_auth.rs asks for it.

Usage: tls_login.py JSON, where JSON holds driver ("pymysql", "connector"
or "cext"), port, user, password and optionally ca, cert, key (PEM paths),
verify_identity (bool), max_tls ("1.2"), auth_plugin and query.

Prints one JSON object: {"ok": true, "tls": <the client side's TLS version
or null>, "rows": [...]} or {"ok": false, "code": <MySQL error code or
null>, "error": "..."}.
"""

import json
import ssl
import sys


def pymysql_connect(a):
    import pymysql

    kw = dict(host="127.0.0.1", port=a["port"], user=a["user"], password=a["password"])
    if a.get("ca"):
        ctx = ssl.create_default_context(cafile=a["ca"])
        ctx.check_hostname = bool(a.get("verify_identity", True))
        if a.get("cert"):
            ctx.load_cert_chain(a["cert"], a["key"])
        if a.get("max_tls") == "1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        kw["ssl"] = ctx
    else:
        # Newer PyMySQL uses TLS whenever the server offers it.
        kw["ssl_disabled"] = True
    conn = pymysql.connect(**kw)
    sock = conn._sock
    tls = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    return conn, tls


def connector_connect(a, pure):
    import mysql.connector

    kw = dict(host="127.0.0.1", port=a["port"], user=a["user"], password=a["password"], use_pure=pure)
    if a.get("auth_plugin"):
        kw["auth_plugin"] = a["auth_plugin"]
    if a.get("ca"):
        kw.update(ssl_ca=a["ca"], ssl_verify_cert=True, ssl_verify_identity=bool(a.get("verify_identity", True)))
        if a.get("cert"):
            kw.update(ssl_cert=a["cert"], ssl_key=a["key"])
    else:
        kw["ssl_disabled"] = True
    conn = mysql.connector.connect(**kw)
    if pure:
        sock = getattr(conn._socket, "sock", None)
        tls = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    else:
        # The C extension's own report of the cipher in use (None: plain).
        tls = conn._cmysql.get_ssl_cipher()
        tls = "TLS " + tls if tls else None
    return conn, tls


def main():
    a = json.loads(sys.argv[1])
    try:
        if a["driver"] == "pymysql":
            conn, tls = pymysql_connect(a)
        else:
            conn, tls = connector_connect(a, a["driver"] == "connector")
        cur = conn.cursor()
        cur.execute(a.get("query", "SELECT CURRENT_USER()"))
        rows = [[None if v is None else str(v) for v in row] for row in cur.fetchall()]
        conn.close()
        print(json.dumps({"ok": True, "tls": tls, "rows": rows}))
    except Exception as e:  # the test compares the error
        code = getattr(e, "errno", None)
        if code is None and getattr(e, "args", None) and isinstance(e.args[0], int):
            code = e.args[0]
        print(json.dumps({"ok": False, "code": code, "error": str(e)}))


main()
