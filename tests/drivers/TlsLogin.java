// One login with MariaDB Connector/J, as tests/tests/tls_auth.rs asks for it.
// Usage: java -cp mariadb-java-client.jar TlsLogin.java URL USER PASSWORD
// Prints {"ok": true, "rows": [["..."]]} or {"ok": false, "code": N, "error": "..."}.
import java.sql.*;

public class TlsLogin {
    static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", " ") + "\"";
    }

    public static void main(String[] args) {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2]);
             Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT CURRENT_USER()")) {
            rs.next();
            System.out.println("{\"ok\": true, \"rows\": [[" + quote(rs.getString(1)) + "]]}");
        } catch (SQLException e) {
            System.out.println("{\"ok\": false, \"code\": " + e.getErrorCode() + ", \"error\": " + quote(String.valueOf(e.getMessage())) + "}");
        }
    }
}
