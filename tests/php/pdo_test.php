<?php
// PHP clients through Sluice: PDO with native (server-side) prepared
// statements, and mysqli. Run by tests/tests/clients.rs:
//
//   php tests/php/pdo_test.php HOST PORT USER PASSWORD DB
//
// Prints "ok NAME" or "FAIL NAME: details" per check; exits 1 if any check
// failed, 0 otherwise. Tables and routines: pdo_t, pdo_p.

declare(strict_types=1);

if ($argc !== 6) {
    fwrite(STDERR, "usage: php {$argv[0]} HOST PORT USER PASSWORD DB\n");
    exit(2);
}
[, $host, $port, $user, $password, $db] = $argv;
$port = (int) $port;

final class CheckFailed extends Exception {}

$failures = 0;

/** Runs one named check; any exception fails it (and only it). */
function check(string $name, callable $fn): void
{
    global $failures;
    try {
        $fn();
        echo "ok $name\n";
    } catch (Throwable $e) {
        $failures++;
        $what = $e instanceof CheckFailed ? $e->getMessage() : get_class($e) . ': ' . $e->getMessage();
        echo "FAIL $name: $what\n";
    }
}

/** A short description of a value (long strings by length and hash). */
function show(mixed $v): string
{
    if (is_string($v) && strlen($v) > 80) {
        return sprintf('string(%d bytes, md5 %s)', strlen($v), md5($v));
    }
    return var_export($v, true);
}

function expect(bool $cond, string $what): void
{
    if (!$cond) {
        throw new CheckFailed($what);
    }
}

function expect_same(mixed $got, mixed $want, string $what): void
{
    if ($got !== $want) {
        throw new CheckFailed("$what: got " . show($got) . ', want ' . show($want));
    }
}

// ---------------------------------------------------------------- PDO

$pdo = null;
check('pdo connect', function () use (&$pdo, $host, $port, $user, $password, $db) {
    $pdo = new PDO("mysql:host=$host;port=$port;dbname=$db;charset=utf8mb4", $user, $password, [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => false,
        PDO::ATTR_DEFAULT_FETCH_MODE => PDO::FETCH_ASSOC,
    ]);
    expect_same((bool) $pdo->getAttribute(PDO::ATTR_EMULATE_PREPARES), false, 'native prepares');
    expect_same($pdo->query('SELECT 1 + 1')->fetchColumn(), 2, 'SELECT 1 + 1');
});
if ($pdo === null) {
    echo "cannot go on without a connection\n";
    exit(1);
}

check('pdo create table', function () use ($pdo) {
    $pdo->exec('DROP TABLE IF EXISTS pdo_t');
    $pdo->exec('CREATE TABLE pdo_t (
        id INT AUTO_INCREMENT PRIMARY KEY,
        n BIGINT NOT NULL,
        s VARCHAR(255) NOT NULL,
        maybe VARCHAR(32) NULL,
        f DOUBLE NOT NULL,
        b LONGBLOB NULL
    ) CHARACTER SET utf8mb4');
    expect_same($pdo->query('SELECT COUNT(*) FROM pdo_t')->fetchColumn(), 0, 'rows in new table');
});

// The rows we insert, by id (a fresh table numbers them 1..50).
$rows = [];
for ($i = 1; $i <= 50; $i++) {
    $rows[$i] = [
        'id' => $i,
        'n' => match ($i) {
            1 => PHP_INT_MAX,
            2 => PHP_INT_MIN,
            default => ($i - 25) * 1_000_003,
        },
        's' => "it's \"quoted\" \\ back`tick — ünïcödé ✓ 🐬 #$i",
        'maybe' => $i % 3 === 0 ? null : "v$i",
        // PDO sends a PHP float as text with `precision` (14) digits, so
        // use values that 14 digits represent exactly.
        'f' => $i % 2 === 0 ? $i * 1.5 + 0.125 : -$i / 1024,
        // Every 10th row carries a 100 KB blob with every byte value in it.
        'b' => $i % 10 === 0 ? str_repeat(implode('', array_map('chr', range(0, 255))), 400) . random_bytes(10) : null,
    ];
}

check('pdo prepared insert x50 + lastInsertId', function () use ($pdo, $rows) {
    $ins = $pdo->prepare('INSERT INTO pdo_t (n, s, maybe, f, b) VALUES (?, ?, ?, ?, ?)');
    foreach ($rows as $id => $r) {
        $ins->bindValue(1, $r['n'], PDO::PARAM_INT);
        $ins->bindValue(2, $r['s'], PDO::PARAM_STR);
        $ins->bindValue(3, $r['maybe'], $r['maybe'] === null ? PDO::PARAM_NULL : PDO::PARAM_STR);
        $ins->bindValue(4, $r['f']);
        if ($r['b'] === null) {
            $ins->bindValue(5, null, PDO::PARAM_NULL);
        } else {
            $blob = fopen('php://memory', 'r+b');
            fwrite($blob, $r['b']);
            rewind($blob);
            $ins->bindValue(5, $blob, PDO::PARAM_LOB);
        }
        $ins->execute();
        expect_same($ins->rowCount(), 1, "rowCount of insert $id");
        expect_same($pdo->lastInsertId(), (string) $id, "lastInsertId after insert $id");
    }
    // The server's own idea of the last insert id agrees with the OK packet's.
    expect_same($pdo->query('SELECT LAST_INSERT_ID()')->fetchColumn(), 50, 'SELECT LAST_INSERT_ID()');
});

check('pdo prepared select round-trips every value', function () use ($pdo, $rows) {
    $sel = $pdo->prepare('SELECT id, n, s, maybe, f, b FROM pdo_t WHERE id >= ? ORDER BY id');
    $sel->execute([1]);
    $got = $sel->fetchAll();
    expect_same(count($got), count($rows), 'row count');
    foreach ($got as $g) {
        $want = $rows[$g['id']] ?? null;
        expect($want !== null, "unexpected id {$g['id']}");
        foreach ($want as $col => $value) {
            expect_same($g[$col], $value, "row {$g['id']} column $col");
        }
    }
    // Same statement, other parameter: re-execution works.
    $sel->execute([48]);
    expect_same(array_column($sel->fetchAll(), 'id'), [48, 49, 50], 'ids >= 48');
});

check('pdo transaction rollback', function () use ($pdo) {
    $pdo->beginTransaction();
    $pdo->prepare('INSERT INTO pdo_t (n, s, f) VALUES (?, ?, ?)')->execute([-1, 'tx-rollback', 0.5]);
    expect_same($pdo->inTransaction(), true, 'inTransaction');
    $pdo->rollBack();
    $count = $pdo->prepare('SELECT COUNT(*) FROM pdo_t WHERE s = ?');
    $count->execute(['tx-rollback']);
    expect_same($count->fetchColumn(), 0, 'rolled-back row count');
});

check('pdo transaction commit', function () use ($pdo) {
    $pdo->beginTransaction();
    $pdo->prepare('INSERT INTO pdo_t (n, s, f) VALUES (?, ?, ?)')->execute([-2, 'tx-commit', 1.5]);
    $pdo->commit();
    expect_same($pdo->inTransaction(), false, 'inTransaction after commit');
    $count = $pdo->prepare('SELECT COUNT(*) FROM pdo_t WHERE s = ?');
    $count->execute(['tx-commit']);
    expect_same($count->fetchColumn(), 1, 'committed row count');
});

check('pdo update rowCount', function () use ($pdo) {
    $upd = $pdo->prepare('UPDATE pdo_t SET f = f + 1 WHERE id <= ?');
    $upd->execute([10]);
    expect_same($upd->rowCount(), 10, 'rows updated (prepared)');
    // Matched but unchanged rows do not count without FOUND_ROWS.
    $upd = $pdo->prepare('UPDATE pdo_t SET maybe = ? WHERE id <= 3');
    $upd->execute(['same']);
    $upd->execute(['same']);
    expect_same($upd->rowCount(), 0, 'rows changed by a no-op update');
    expect_same($pdo->exec("UPDATE pdo_t SET maybe = 'x' WHERE id IN (4, 5)"), 2, 'exec() update');
});

check('pdo missing table raises 42S02 and the connection survives', function () use ($pdo) {
    foreach (['prepare' => fn () => $pdo->prepare('SELECT * FROM pdo_missing_table')->execute(),
              'query' => fn () => $pdo->query('SELECT * FROM pdo_missing_table')] as $how => $fn) {
        try {
            $fn();
            throw new CheckFailed("$how: no exception");
        } catch (PDOException $e) {
            expect_same($e->getCode(), '42S02', "$how: SQLSTATE");
            expect_same($e->errorInfo[1] ?? null, 1146, "$how: error number");
            expect(str_contains($e->getMessage(), 'pdo_missing_table'), "$how: message names the table: {$e->getMessage()}");
        }
        expect_same($pdo->query('SELECT 42')->fetchColumn(), 42, "$how: query after the error");
    }
});

check('pdo CALL with multiple result sets (nextRowset)', function () use ($pdo) {
    $pdo->exec('DROP PROCEDURE IF EXISTS pdo_p');
    $pdo->exec("CREATE PROCEDURE pdo_p(IN k INT)
        BEGIN
            SELECT k AS a, 'first' AS tag;
            SELECT id, s FROM pdo_t WHERE id <= k ORDER BY id;
        END");
    // Once as a native prepared statement, once through the text protocol.
    foreach (['prepared', 'query'] as $how) {
        if ($how === 'prepared') {
            $call = $pdo->prepare('CALL pdo_p(?)');
            $call->execute([3]);
        } else {
            $call = $pdo->query('CALL pdo_p(3)');
        }
        $sets = [];
        do {
            $sets[] = $call->columnCount() > 0 ? $call->fetchAll(PDO::FETCH_NUM) : [];
        } while ($call->nextRowset());
        $call->closeCursor();
        expect(count($sets) >= 2, "$how: at least 2 rowsets, got " . count($sets));
        expect_same($sets[0], [[3, 'first']], "$how: first result set");
        expect_same(array_column($sets[1], 0), [1, 2, 3], "$how: second result set ids");
        // Then the CALL's own status, which PDO shows as an empty rowset.
        foreach (array_slice($sets, 2) as $k => $extra) {
            expect_same($extra, [], "$how: rowset " . ($k + 3) . ' (the CALL status)');
        }
        expect_same($pdo->query('SELECT 7')->fetchColumn(), 7, "$how: query after CALL");
    }
});

// ---------------------------------------------------------------- mysqli

mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
$my = null;

check('mysqli connect', function () use (&$my, $host, $port, $user, $password, $db) {
    $my = new mysqli($host, $user, $password, $db, $port);
    $my->set_charset('utf8mb4');
    expect(str_contains(strtolower($my->server_info), 'mariadb'), "server_info is MariaDB: {$my->server_info}");
    expect_same($my->query('SELECT DATABASE()')->fetch_row(), [$db], 'DATABASE()');
});
if ($my === null) {
    echo "cannot go on without a mysqli connection\n";
    exit(1);
}

check('mysqli multi_query with 3 statements', function () use ($my) {
    expect($my->multi_query("SELECT 1 AS a; SELECT 'two' AS b, NULL AS c; SELECT id FROM pdo_t WHERE id <= 3 ORDER BY id"),
        'multi_query returned false');
    $sets = [];
    do {
        if ($result = $my->store_result()) {
            $sets[] = $result->fetch_all(MYSQLI_NUM);
            $result->free();
        }
    } while ($my->more_results() && $my->next_result());
    // Text protocol: values come back as strings.
    expect_same($sets, [[['1']], [['two', null]], [['1'], ['2'], ['3']]], 'result sets');
    expect_same($my->query('SELECT 5')->fetch_row(), ['5'], 'query after multi_query');
});

check('mysqli prepared statement bind_param/bind_result', function () use ($my) {
    $stmt = $my->prepare('SELECT id, n, s, maybe FROM pdo_t WHERE id BETWEEN ? AND ? AND s LIKE ? ORDER BY id');
    $lo = 4;
    $hi = 6;
    $like = '%ünïcödé%';
    $stmt->bind_param('iis', $lo, $hi, $like);
    $stmt->execute();
    $stmt->bind_result($id, $n, $s, $maybe);
    $got = [];
    while ($stmt->fetch()) {
        $got[] = [$id, $n, $s, $maybe];
    }
    $stmt->close();
    expect_same(array_column($got, 0), [4, 5, 6], 'ids');
    expect_same($got[0][1], (4 - 25) * 1_000_003, 'n of row 4');
    expect_same($got[1][2], "it's \"quoted\" \\ back`tick — ünïcödé ✓ 🐬 #5", 's of row 5');
    expect_same($got[2][3], null, 'maybe of row 6 (NULL)');

    $ins = $my->prepare('INSERT INTO pdo_t (n, s, f) VALUES (?, ?, ?)');
    $n = 123;
    $s = 'from mysqli';
    $f = 2.25;
    $ins->bind_param('isd', $n, $s, $f);
    $ins->execute();
    expect_same($ins->affected_rows, 1, 'affected_rows of insert');
    expect($ins->insert_id > 50, "insert_id after the PDO rows: {$ins->insert_id}");
    $ins->close();
});

check('mysqli send_long_data', function () use ($my) {
    $ins = $my->prepare("INSERT INTO pdo_t (n, s, f, b) VALUES (0, 'long data', 0, ?)");
    $null = null;
    $ins->bind_param('b', $null);
    $chunks = [random_bytes(256 * 1024), random_bytes(256 * 1024), str_repeat("\0'\"\\", 1000)];
    foreach ($chunks as $chunk) {
        $ins->send_long_data(0, $chunk);
    }
    $ins->execute();
    $id = $ins->insert_id;
    $ins->close();
    $blob = implode('', $chunks);
    $got = $my->query("SELECT LENGTH(b), MD5(b) FROM pdo_t WHERE id = $id")->fetch_row();
    expect_same($got, [(string) strlen($blob), md5($blob)], 'stored blob length and md5');
});

check('mysqli read-only cursor', function () use ($my) {
    $stmt = $my->prepare('SELECT id FROM pdo_t WHERE id <= ? ORDER BY id');
    $stmt->attr_set(MYSQLI_STMT_ATTR_CURSOR_TYPE, MYSQLI_CURSOR_TYPE_READ_ONLY);
    $max = 20;
    $stmt->bind_param('i', $max);
    $stmt->execute();
    $stmt->bind_result($id);
    $ids = [];
    while ($stmt->fetch()) {
        $ids[] = $id;
    }
    $stmt->close();
    expect_same($ids, range(1, 20), 'ids fetched through the cursor');
    expect_same($my->query('SELECT 6')->fetch_row(), ['6'], 'query after the cursor');
});

$my->close();
$pdo = null;

echo $failures === 0 ? "all PHP checks passed\n" : "$failures PHP check(s) failed\n";
exit($failures === 0 ? 0 : 1);
