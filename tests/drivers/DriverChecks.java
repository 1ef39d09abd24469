// Real-driver checks for JDBC with MariaDB Connector/J (Debian's
// libmariadb-java), client-side prepared statements (the default: the text
// protocol) and server-side ones (useServerPrepStmts=true: the binary
// protocol). Run by tests/tests/drivers.rs as a single-file program (Java 11+,
// no build step):
//
//   java -cp /usr/share/java/mariadb-java-client.jar tests/drivers/DriverChecks.java \
//       [--prefix P] [--only CHECK]... [--skip CHECK]... HOST PORT USER PASSWORD DB
//
// Prints one JSON object per check, one a line:
//   {"check": NAME, "result": ...}        what the check saw
//   {"check": NAME, "error": [CODE, MSG]}  the check itself broke
// A step inside a check that gets a server error records {"error": [CODE, MSG]}
// in its place, so that a run against MariaDB directly and one through Sluice
// can be compared check by check (the server is the oracle). Nothing printed
// depends on the connection (ids, timings): those are reduced to booleans, and
// Connector/J's "(conn=N) " message prefix is dropped.
//
// Tables and routines: PREFIX_* (PREFIX defaults to drv_connectorj).

import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.SQLWarning;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;

public class DriverChecks {
    static String host, port, user, password, database;
    static String prefix = "drv_connectorj";

    interface Body {
        Object run() throws Exception;
    }

    // ------------------------------------------------------------ connections

    /** A connection; `extra` are URL options ("useServerPrepStmts=true", ...). */
    static Connection connectTo(String db, String... extra) throws SQLException {
        StringBuilder url = new StringBuilder("jdbc:mariadb://" + host + ":" + port + "/" + (db == null ? "" : db));
        url.append("?user=").append(user).append("&password=").append(password);
        for (String e : extra) url.append('&').append(e);
        return DriverManager.getConnection(url.toString());
    }

    static Connection connect(String... extra) throws SQLException {
        return connectTo(database, extra);
    }

    static final String SERVER_PS = "useServerPrepStmts=true";
    /** [name, URL option]: client-side prepares (text protocol) and server-side ones. */
    static final String[][] MODES = {{"text", "useServerPrepStmts=false"}, {"prepared", SERVER_PS}};

    // ------------------------------------------------------------ helpers

    static String hex(byte[] b) {
        StringBuilder s = new StringBuilder();
        for (byte x : b) s.append(String.format("%02x", x));
        return s.toString();
    }

    static String md5(byte[] b) throws Exception {
        return hex(MessageDigest.getInstance("MD5").digest(b));
    }

    /** A value as "Type:text", so that the driver's type shows in the output. */
    static Object norm(Object v) throws Exception {
        if (v == null) return null;
        if (v instanceof byte[]) {
            byte[] b = (byte[]) v;
            if (b.length > 64) return "byte[]:len=" + b.length + ",md5=" + md5(b);
            return "byte[]:" + hex(b);
        }
        return v.getClass().getSimpleName() + ":" + v;
    }

    static List<Object> rows(ResultSet rs) throws Exception {
        List<Object> out = new ArrayList<>();
        ResultSetMetaData md = rs.getMetaData();
        while (rs.next()) {
            List<Object> row = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) row.add(norm(rs.getObject(i)));
            out.add(row);
        }
        rs.close();
        return out;
    }

    /** Runs a statement with parameters through a PreparedStatement: its rows, or its update count. */
    static Object q(Connection c, String sql, Object... params) throws Exception {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < params.length; i++) ps.setObject(i + 1, params[i]);
            if (ps.execute()) return rows(ps.getResultSet());
            return ps.getUpdateCount();
        }
    }

    /** Runs a statement through a plain Statement (always the text protocol). */
    static Object s(Connection c, String sql) throws Exception {
        try (Statement st = c.createStatement()) {
            if (st.execute(sql)) return rows(st.getResultSet());
            return st.getUpdateCount();
        }
    }

    /** The first column of the first row, normalized. */
    static Object one(Connection c, String sql, Object... params) throws Exception {
        @SuppressWarnings("unchecked")
        List<List<Object>> r = (List<List<Object>>) (Object) q(c, sql, params);
        return r.get(0).get(0);
    }

    static Object rawOne(Connection c, String sql) throws Exception {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getObject(1);
        }
    }

    static String message(SQLException e) {
        String m = e.getMessage() == null ? "" : e.getMessage();
        m = m.replaceFirst("^\\(conn[:=]\\d+\\) ", "");
        int query = m.indexOf("\nQuery is:");
        if (query >= 0) m = m.substring(0, query);
        return m.trim();
    }

    static List<Object> errorOf(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof SQLException && ((SQLException) t).getErrorCode() != 0) {
                return Arrays.asList(((SQLException) t).getErrorCode(), message((SQLException) t));
            }
        }
        return Arrays.asList(null, e.getClass().getSimpleName() + ": " + e.getMessage());
    }

    /** One step of a check: its value, or {"error": [code, msg]}. */
    static Object step(Body b) {
        try {
            return b.run();
        } catch (Exception e) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("error", errorOf(e));
            return m;
        }
    }

    static void close(AutoCloseable c) {
        try {
            c.close();
        } catch (Exception e) {
            // closing a broken connection
        }
    }

    static Map<String, Object> map() {
        return new LinkedHashMap<>();
    }

    // ------------------------------------------------------------ JSON

    static void json(StringBuilder out, Object v) {
        if (v == null) {
            out.append("null");
        } else if (v instanceof Boolean || v instanceof Integer || v instanceof Long) {
            out.append(v);
        } else if (v instanceof Map) {
            out.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (!first) out.append(',');
                first = false;
                json(out, String.valueOf(e.getKey()));
                out.append(':');
                json(out, e.getValue());
            }
            out.append('}');
        } else if (v instanceof List) {
            out.append('[');
            boolean first = true;
            for (Object x : (List<?>) v) {
                if (!first) out.append(',');
                first = false;
                json(out, x);
            }
            out.append(']');
        } else {
            String s = String.valueOf(v);
            out.append('"');
            for (char ch : s.toCharArray()) {
                switch (ch) {
                    case '"': out.append("\\\""); break;
                    case '\\': out.append("\\\\"); break;
                    case '\n': out.append("\\n"); break;
                    case '\r': out.append("\\r"); break;
                    case '\t': out.append("\\t"); break;
                    default:
                        if (ch < 0x20) out.append(String.format("\\u%04x", (int) ch));
                        else out.append(ch);
                }
            }
            out.append('"');
        }
    }

    // ------------------------------------------------------------ checks

    static final String SELECT_TYPES = "SELECT 1 AS i, -9223372036854775808 AS big, 18446744073709551615 AS ubig, "
        + "'abc' AS s, 1.50 AS d, 2.5e0 AS f, NULL AS n, DATE '2024-02-29' AS dt, "
        + "TIMESTAMP '2024-02-29 12:34:56.789' AS ts, TIME '12:34:56' AS tm, "
        + "x'00ff' AS bin, 'ünï🐬' AS u, CAST(7 AS UNSIGNED) AS un, 1 = 1 AS b";

    static Object selectTypes() throws Exception {
        Map<String, Object> out = map();
        for (String[] m : MODES) {
            Connection c = connect(m[1]);
            out.put(m[0], step(() -> q(c, SELECT_TYPES + ", ? AS p", 7)));
            close(c);
        }
        return out;
    }

    static Object preparedParams() throws Exception {
        String t = prefix + "_pp";
        Connection c0 = connect();
        s(c0, "DROP TABLE IF EXISTS " + t);
        s(c0, "CREATE TABLE " + t + " (id INT AUTO_INCREMENT PRIMARY KEY, n BIGINT, s VARCHAR(100), "
            + "b BLOB, f DOUBLE, dt DATETIME(3), maybe INT NULL) CHARACTER SET utf8mb4");
        close(c0);
        byte[] all = new byte[256];
        for (int i = 0; i < 256; i++) all[i] = (byte) i;
        Object[][] rows = {
            {Long.MAX_VALUE, "it's \"quoted\" \\ ünïcödé 🐬", all, 1.25,
                java.sql.Timestamp.valueOf("2024-02-29 12:34:56.789"), null},
            {Long.MIN_VALUE, "", new byte[0], -0.5, java.sql.Timestamp.valueOf("1999-12-31 23:59:59"), 3},
        };
        Map<String, Object> out = map();
        for (String[] m : MODES) {
            Connection c = connect(m[1]);
            out.put(m[0], step(() -> {
                s(c, "DELETE FROM " + t);
                for (Object[] r : rows) {
                    q(c, "INSERT INTO " + t + " (n, s, b, f, dt, maybe) VALUES (?, ?, ?, ?, ?, ?)", r);
                }
                Map<String, Object> r = map();
                r.put("rows", q(c, "SELECT n, s, b, f, dt, maybe FROM " + t + " WHERE n > ? AND s LIKE ? ORDER BY id",
                    Long.MIN_VALUE, "%ü%"));
                r.put("count", q(c, "SELECT COUNT(*) FROM " + t + " WHERE maybe IS NULL OR maybe = ?", 3));
                return r;
            }));
            close(c);
        }
        return out;
    }

    static Object transaction() throws Exception {
        String t = prefix + "_tx";
        Connection c = connect(SERVER_PS);
        s(c, "DROP TABLE IF EXISTS " + t);
        s(c, "CREATE TABLE " + t + " (id INT PRIMARY KEY, s VARCHAR(20))");
        Map<String, Object> out = map();
        out.put("explicit", step(() -> {
            Map<String, Object> r = map();
            c.setAutoCommit(false);
            q(c, "INSERT INTO " + t + " VALUES (?, ?)", 1, "rolled back");
            r.put("autocommit_in_trans", one(c, "SELECT @@autocommit"));
            c.rollback();
            r.put("after_rollback", one(c, "SELECT COUNT(*) FROM " + t));
            q(c, "INSERT INTO " + t + " VALUES (?, ?)", 2, "committed");
            c.commit();
            c.setAutoCommit(true);
            r.put("after_commit", one(c, "SELECT COUNT(*) FROM " + t));
            r.put("autocommit", one(c, "SELECT @@autocommit"));
            return r;
        }));
        out.put("begin_commit", step(() -> {
            s(c, "START TRANSACTION");
            s(c, "INSERT INTO " + t + " VALUES (3, 'begin')");
            s(c, "ROLLBACK");
            s(c, "BEGIN");
            s(c, "INSERT INTO " + t + " VALUES (4, 'begin commit')");
            s(c, "COMMIT");
            return one(c, "SELECT GROUP_CONCAT(id ORDER BY id) FROM " + t);
        }));
        out.put("final", step(() -> q(c, "SELECT id, s FROM " + t + " ORDER BY id")));
        close(c);
        return out;
    }

    static Object lastInsertId() throws Exception {
        String t = prefix + "_lid";
        Connection c0 = connect();
        s(c0, "DROP TABLE IF EXISTS " + t);
        s(c0, "CREATE TABLE " + t + " (id INT AUTO_INCREMENT PRIMARY KEY, v INT)");
        close(c0);
        Map<String, Object> out = map();
        for (String[] m : MODES) {
            Connection c = connect(m[1]);
            out.put(m[0], step(() -> {
                Map<String, Object> r = map();
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t + " (v) VALUES (?)",
                        Statement.RETURN_GENERATED_KEYS)) {
                    ps.setInt(1, 1);
                    ps.executeUpdate();
                    ResultSet keys = ps.getGeneratedKeys();
                    r.put("driver_single", rows(keys));
                }
                r.put("sql_single", one(c, "SELECT LAST_INSERT_ID()"));
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t + " (v) VALUES (?), (?), (?)",
                        Statement.RETURN_GENERATED_KEYS)) {
                    for (int i = 1; i <= 3; i++) ps.setInt(i, i + 1);
                    r.put("affected_multi", ps.executeUpdate());
                    r.put("driver_multi", rows(ps.getGeneratedKeys()));
                }
                r.put("sql_multi", one(c, "SELECT LAST_INSERT_ID()"));
                q(c, "UPDATE " + t + " SET v = v + 1 WHERE id = ?", 1);
                r.put("sql_after_update", one(c, "SELECT LAST_INSERT_ID()"));
                return r;
            }));
            close(c);
        }
        return out;
    }

    static Object noSchema() throws Exception {
        List<Object> out = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            Connection a = connect();
            one(a, "SELECT 1");
            close(a);
            Connection b = connectTo(null);
            out.add(step(() -> one(b, "SELECT DATABASE()")));
            close(b);
        }
        return out;
    }

    static Object blob20mb() throws Exception {
        String t = prefix + "_blob";
        byte[] data = new byte[20 * 1024 * 1024];
        new Random(20).nextBytes(data);
        String sum = md5(data);
        Connection c0 = connect();
        s(c0, "DROP TABLE IF EXISTS " + t);
        s(c0, "CREATE TABLE " + t + " (id INT PRIMARY KEY, b LONGBLOB)");
        close(c0);
        Map<String, Object> out = map();
        for (int i = 0; i < MODES.length; i++) {
            String[] m = MODES[i];
            int id = i;
            out.put(m[0], step(() -> {
                Map<String, Object> r = map();
                Connection c = connect(m[1]);
                try {
                    try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t + " VALUES (?, ?)")) {
                        ps.setInt(1, id);
                        ps.setBytes(2, data);
                        ps.executeUpdate();
                    }
                    try (PreparedStatement ps = c.prepareStatement("SELECT LENGTH(b), MD5(b), b FROM " + t + " WHERE id = ?")) {
                        ps.setInt(1, id);
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            r.put("length", rs.getLong(1));
                            r.put("server_md5_ok", sum.equals(rs.getString(2)));
                            byte[] back = rs.getBytes(3);
                            r.put("bytes_length", back.length);
                            r.put("bytes_md5_ok", sum.equals(md5(back)));
                        }
                    }
                    r.put("after", one(c, "SELECT 1"));
                } finally {
                    close(c);
                }
                return r;
            }));
        }
        Connection c1 = connect();
        s(c1, "DROP TABLE IF EXISTS " + t);
        close(c1);
        return out;
    }

    static Object procOutParam() throws Exception {
        Map<String, Object> out = map();
        String p = prefix + "_p";
        Connection c = connect(SERVER_PS);
        s(c, "DROP PROCEDURE IF EXISTS " + p);
        s(c, "CREATE PROCEDURE " + p + "(IN a INT, OUT b INT) SET b = a * 2");
        out.put("call_out", step(() -> {
            s(c, "CALL " + p + "(5, @out)");
            return one(c, "SELECT @out");
        }));
        out.put("select_into", step(() -> {
            s(c, "SELECT 42 INTO @v");
            return one(c, "SELECT @v");
        }));
        out.put("set_assign", step(() -> {
            s(c, "SET @a := 7 + 1");
            return one(c, "SELECT @a");
        }));
        out.put("typed", step(() -> {
            s(c, "SET @s := 'text', @dec := 1.25, @dbl := 0.5e0, @nul := NULL, @neg := -3");
            return Arrays.asList(s(c, "SELECT @s, @dec, @dbl, @nul, @neg"), q(c, "SELECT @s, @dec, @dbl, @nul, @neg"));
        }));
        out.put("all_later", step(() -> {
            one(c, "SELECT 1");
            return s(c, "SELECT @out, @v, @a, @s, @dec");
        }));
        out.put("call_prepared", step(() -> {
            q(c, "CALL " + p + "(?, @out2)", 21);
            return Arrays.asList(s(c, "SELECT @out2"), q(c, "SELECT @out2"));
        }));
        // JDBC's own way: a CallableStatement with a registered OUT parameter.
        out.put("callable", step(() -> {
            try (java.sql.CallableStatement cs = c.prepareCall("{call " + p + "(?, ?)}")) {
                cs.setInt(1, 8);
                cs.registerOutParameter(2, java.sql.Types.INTEGER);
                cs.execute();
                return cs.getInt(2);
            }
        }));
        close(c);
        return out;
    }

    static final String CHARSET_VARS = "SELECT @@character_set_client, @@character_set_connection, "
        + "@@character_set_results, @@collation_connection";

    static Object setNames() throws Exception {
        // Connector/J always connects with utf8mb4: start from latin1 by SET NAMES.
        Connection c = connect(SERVER_PS);
        Map<String, Object> out = map();
        out.put("at_connect", step(() -> s(c, CHARSET_VARS)));
        s(c, "SET NAMES latin1");
        out.put("after_latin1", step(() -> s(c, CHARSET_VARS)));
        s(c, "SET NAMES utf8mb4");
        List<Object> after = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            int k = i;
            after.add(step(() -> {
                q(c, "SELECT ?", k);
                return k == 2 ? q(c, CHARSET_VARS) : s(c, CHARSET_VARS);
            }));
        }
        out.put("after_set_names", after);
        s(c, "SET NAMES latin1 COLLATE latin1_bin");
        out.put("after_collate", step(() -> {
            s(c, "DO 1");
            return s(c, CHARSET_VARS);
        }));
        close(c);
        return out;
    }

    static Object warnings() throws Exception {
        String t = prefix + "_w";
        Connection c = connect();
        Map<String, Object> out = map();
        s(c, "SET SESSION sql_mode = ''");
        s(c, "DROP TABLE IF EXISTS " + t);
        s(c, "CREATE TABLE " + t + " (c CHAR(2))");
        try (Statement st = c.createStatement()) {
            st.executeUpdate("INSERT INTO " + t + " VALUES ('abcdef'), ('xyz'), ('ok')");
            // Longer than any hold of the connection that ran the INSERT.
            Thread.sleep(1000);
            // Connector/J fetches these with SHOW WARNINGS, lazily.
            out.put("driver_warnings", step(() -> {
                List<Object> w = new ArrayList<>();
                for (SQLWarning x = st.getWarnings(); x != null; x = x.getNextWarning()) {
                    w.add(Arrays.asList(x.getErrorCode(), message(x)));
                }
                return w;
            }));
        }
        out.put("show_warnings", step(() -> s(c, "SHOW WARNINGS")));
        out.put("show_count", step(() -> s(c, "SHOW COUNT(*) WARNINGS")));
        out.put("warning_count", step(() -> s(c, "SELECT @@warning_count")));
        out.put("found_rows", step(() -> {
            s(c, "SELECT SQL_CALC_FOUND_ROWS * FROM " + t + " LIMIT 1");
            Thread.sleep(300);
            return one(c, "SELECT FOUND_ROWS()");
        }));
        out.put("row_count", step(() -> {
            s(c, "UPDATE " + t + " SET c = 'q' WHERE c LIKE 'a%'");
            Thread.sleep(300);
            return one(c, "SELECT ROW_COUNT()");
        }));
        close(c);
        return out;
    }

    static Object readAfterWriteNewConn() throws Exception {
        String t = prefix + "_raw";
        Connection a = connect();
        s(a, "DROP TABLE IF EXISTS " + t);
        s(a, "CREATE TABLE " + t + " (id INT AUTO_INCREMENT PRIMARY KEY, v INT)");
        List<Object> counts = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            a.setAutoCommit(false);
            q(a, "INSERT INTO " + t + " (v) VALUES (?), (?)", i, i);
            a.commit();
            a.setAutoCommit(true);
            Connection b = connect();
            counts.add(step(() -> one(b, "SELECT COUNT(*) FROM " + t)));
            close(b);
        }
        close(a);
        return counts;
    }

    static long handshakeId(Connection c) throws SQLException {
        return c.unwrap(org.mariadb.jdbc.MariaDbConnection.class).getServerThreadId();
    }

    static Object connectionId() throws Exception {
        Connection c = connect(SERVER_PS);
        long first = ((Number) rawOne(c, "SELECT CONNECTION_ID()")).longValue();
        rawOne(c, "SELECT 1");
        long second = ((Number) rawOne(c, "SELECT CONNECTION_ID()")).longValue();
        long third;
        try (PreparedStatement ps = c.prepareStatement("SELECT CONNECTION_ID()"); ResultSet rs = ps.executeQuery()) {
            rs.next();
            third = rs.getLong(1);
        }
        Map<String, Object> out = map();
        out.put("same", first == second);
        out.put("prepared_same", first == third);
        out.put("equals_handshake", handshakeId(c) == first);
        close(c);
        return out;
    }

    /** Runs SELECT SLEEP(10) on `c` in another thread while `stopper` runs here after 0.5 s. */
    static Map<String, Object> sleepAndStop(Connection c, boolean prepared, Statement[] holder, Body stopper)
            throws Exception {
        Map<String, Object> r = map();
        long t0 = System.nanoTime();
        CompletableFuture<Object> running = CompletableFuture.supplyAsync(() -> {
            try {
                if (prepared) {
                    PreparedStatement ps = c.prepareStatement("SELECT SLEEP(10)");
                    holder[0] = ps;
                    return Arrays.asList("rows", rows(ps.executeQuery()));
                }
                Statement st = c.createStatement();
                holder[0] = st;
                return Arrays.asList("rows", rows(st.executeQuery("SELECT SLEEP(10)")));
            } catch (Exception e) {
                return Arrays.asList("error", errorOf(e).get(0));
            }
        });
        Thread.sleep(500);
        r.put("stop", step(stopper));
        Map<String, Object> victim = map();
        victim.put("outcome", running.get());
        victim.put("fast", System.nanoTime() - t0 < 5_000_000_000L);
        r.put("victim", victim);
        r.put("victim_after", step(() -> one(c, "SELECT 1")));
        return r;
    }

    interface Action {
        void run() throws Exception;
    }

    /** Runs `a`; an error's message shows `id` (which differs between connections) as <victim>. */
    static void hidingId(long id, Action a) throws Exception {
        try {
            a.run();
        } catch (SQLException e) {
            throw new SQLException(message(e).replace(String.valueOf(id), "<victim>"), e.getSQLState(),
                e.getErrorCode());
        }
    }

    static Object killQuery() throws Exception {
        Map<String, Object> out = map();
        for (String[] m : MODES) {
            Connection c1 = connect(m[1]);
            Statement[] holder = new Statement[1];
            // Statement.cancel() from another thread: Connector/J opens a new
            // connection and sends KILL QUERY <the handshake's thread id>.
            long id = handshakeId(c1);
            out.put("cancel_" + m[0], sleepAndStop(c1, m[0].equals("prepared"), holder, () -> {
                hidingId(id, () -> holder[0].cancel());
                return "ok";
            }));
            close(c1);
        }
        Connection c1 = connect();
        Connection c2 = connect();
        long victim = ((Number) rawOne(c1, "SELECT CONNECTION_ID()")).longValue();
        out.put("kill_query", sleepAndStop(c1, false, new Statement[1], () -> {
            hidingId(victim, () -> s(c2, "KILL QUERY " + victim));
            return "ok";
        }));
        out.put("unknown_id", step(() -> s(c2, "KILL QUERY 999999")));

        // KILL <id> closes that client: its next statement fails (how depends
        // on timing, so only whether it fails is printed); the killer goes on.
        Connection c3 = connect();
        long third = ((Number) rawOne(c3, "SELECT CONNECTION_ID()")).longValue();
        Map<String, Object> kc = map();
        kc.put("kill", step(() -> {
            hidingId(third, () -> s(c2, "KILL " + third));
            return "ok";
        }));
        Thread.sleep(200);
        boolean fails;
        try {
            rawOne(c3, "SELECT 1");
            fails = false;
        } catch (SQLException e) {
            fails = true;
        }
        kc.put("victim_fails", fails);
        kc.put("killer_after", step(() -> one(c2, "SELECT 1")));
        out.put("kill_connection", kc);
        close(c3);
        close(c1);
        close(c2);
        return out;
    }

    static Object connAttrs() throws Exception {
        Map<String, Object> out = map();
        Connection c = connect("connectionAttributes=program_name:sluice-test,app_name:sluice-test,sluice_case:drivers");
        out.put("works", one(c, "SELECT 1"));
        Object ps = rawOne(c, "SELECT /* sluice:primary */ @@performance_schema");
        out.put("performance_schema", norm(ps));
        if (((Number) ps).intValue() != 0) {
            String marker = prefix + "-attrs-" + UUID.randomUUID();
            // The backend connection that runs this very query, found by the
            // marker in its text (CONNECTION_ID() would be the client's own).
            // The hint (a comment to the server) keeps both reads on the
            // primary in split mode: the test topology has performance_schema
            // only there.
            String sql = "SELECT /* sluice:primary */ /* " + marker + " */ a.ATTR_NAME, a.ATTR_VALUE "
                + "FROM performance_schema.session_connect_attrs a "
                + "JOIN information_schema.PROCESSLIST p ON p.ID = a.PROCESSLIST_ID "
                + "WHERE p.INFO LIKE '%" + marker + "%' "
                + "AND a.ATTR_NAME IN ('program_name', 'app_name', 'sluice_case') "
                + "ORDER BY a.ATTR_NAME";
            out.put("attrs", step(() -> s(c, sql)));
        }
        close(c);
        return out;
    }

    // ------------------------------------------------------------ main

    public static void main(String[] argv) throws Exception {
        Map<String, Body> checks = new LinkedHashMap<>();
        checks.put("select_types", DriverChecks::selectTypes);
        checks.put("prepared_params", DriverChecks::preparedParams);
        checks.put("transaction", DriverChecks::transaction);
        checks.put("last_insert_id", DriverChecks::lastInsertId);
        checks.put("no_schema", DriverChecks::noSchema);
        checks.put("blob_20mb", DriverChecks::blob20mb);
        checks.put("proc_out_param", DriverChecks::procOutParam);
        checks.put("set_names", DriverChecks::setNames);
        checks.put("warnings", DriverChecks::warnings);
        checks.put("read_after_write_new_conn", DriverChecks::readAfterWriteNewConn);
        checks.put("connection_id", DriverChecks::connectionId);
        checks.put("kill_query", DriverChecks::killQuery);
        checks.put("conn_attrs", DriverChecks::connAttrs);

        List<String> only = new ArrayList<>();
        List<String> skip = new ArrayList<>();
        List<String> pos = new ArrayList<>();
        for (int i = 0; i < argv.length; i++) {
            switch (argv[i]) {
                case "--only": only.add(argv[++i]); break;
                case "--skip": skip.add(argv[++i]); break;
                case "--prefix": prefix = argv[++i]; break;
                default: pos.add(argv[i]);
            }
        }
        for (String n : only) if (!checks.containsKey(n)) usage("unknown check " + n + " (checks: " + checks.keySet() + ")");
        for (String n : skip) if (!checks.containsKey(n)) usage("unknown check " + n + " (checks: " + checks.keySet() + ")");
        if (pos.size() != 5) usage("usage: DriverChecks [--prefix P] [--only C]... [--skip C]... HOST PORT USER PASSWORD DB");
        host = pos.get(0);
        port = pos.get(1);
        user = pos.get(2);
        password = pos.get(3);
        database = pos.get(4);

        for (Map.Entry<String, Body> e : checks.entrySet()) {
            String name = e.getKey();
            if ((!only.isEmpty() && !only.contains(name)) || skip.contains(name)) continue;
            Map<String, Object> line = map();
            line.put("check", name);
            try {
                line.put("result", e.getValue().run());
            } catch (Exception ex) {
                ex.printStackTrace();
                line.put("error", errorOf(ex));
            }
            StringBuilder sb = new StringBuilder();
            json(sb, line);
            System.out.println(sb);
            System.out.flush();
        }
        System.exit(0);
    }

    static void usage(String msg) {
        System.err.println(msg);
        System.exit(2);
    }
}
