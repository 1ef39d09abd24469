<?php
// One login with PHP PDO over TLS, as tests/tests/tls_auth.rs asks for it.
// Usage: php tls_login.php PORT USER PASSWORD CA_FILE
// Prints {"ok": true, "rows": [...]} or {"ok": false, "code": N, "error": "..."}.
[$_, $port, $user, $password, $ca] = $argv;
try {
    $pdo = new PDO("mysql:host=127.0.0.1;port=$port", $user, $password, [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::MYSQL_ATTR_SSL_CA => $ca,
        PDO::MYSQL_ATTR_SSL_VERIFY_SERVER_CERT => true,
    ]);
    $rows = $pdo->query("SELECT CURRENT_USER()")->fetchAll(PDO::FETCH_NUM);
    echo json_encode(["ok" => true, "rows" => $rows]), "\n";
} catch (PDOException $e) {
    $code = $e->errorInfo[1] ?? null;
    echo json_encode(["ok" => false, "code" => $code, "error" => $e->getMessage()]), "\n";
}
