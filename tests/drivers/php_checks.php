<?php
// Real-driver checks for PHP (mysqlnd): PDO, with native prepares (the binary
// protocol) and emulated ones (the text protocol), and mysqli (prepared
// statements and plain queries). Run by tests/tests/drivers.rs:
//
//   php tests/drivers/php_checks.php --driver pdo|mysqli [--prefix P]
//       [--only CHECK]... [--skip CHECK]... HOST PORT USER PASSWORD DB
//
// Prints one JSON object per check, one a line:
//   {"check": NAME, "result": ...}        what the check saw
//   {"check": NAME, "error": [CODE, MSG]}  the check itself broke
// A step inside a check that gets a server error records {"error": [CODE, MSG]}
// in its place, so that a run against MariaDB directly and one through Sluice
// can be compared check by check (the server is the oracle). Nothing printed
// depends on the connection (ids, timings): those are reduced to booleans.
//
// Tables and routines: PREFIX_* (PREFIX defaults to drv_<driver>).
// (tests/php/pdo_test.php is the older pass/fail PHP test of clients.rs.)

declare(strict_types=1);

// 20 MB values, escaped and fetched back, take a few copies.
ini_set('memory_limit', '1G');

// ---------------------------------------------------------------- arguments

$opts = ['driver' => null, 'prefix' => null, 'only' => [], 'skip' => [], 'kill' => null];
$pos = [];
for ($i = 1; $i < $argc; $i++) {
    $a = $argv[$i];
    match ($a) {
        '--driver' => $opts['driver'] = $argv[++$i],
        '--prefix' => $opts['prefix'] = $argv[++$i],
        '--only' => $opts['only'][] = $argv[++$i],
        '--skip' => $opts['skip'][] = $argv[++$i],
        // Internal: the killer child process of the kill_query check.
        '--kill' => $opts['kill'] = $argv[++$i],
        default => $pos[] = $a,
    };
}
if (count($pos) !== 5 || !in_array($opts['driver'], ['pdo', 'mysqli'], true)) {
    fwrite(STDERR, "usage: php {$argv[0]} --driver pdo|mysqli [--prefix P] [--only C]... [--skip C]... HOST PORT USER PASSWORD DB\n");
    exit(2);
}
[$HOST, $PORT, $USER, $PASSWORD, $DB] = $pos;
$PORT = (int) $PORT;
$DRIVER = $opts['driver'];
$P = $opts['prefix'] ?? "drv_$DRIVER";
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

// ---------------------------------------------------------------- connections
//
// A connection is a small object with one API over both drivers:
//   q(sql, params, prepared) -> rows (list of lists) or ['affected' => n]

final class Conn
{
    public ?PDO $pdo = null;
    public ?mysqli $my = null;
    public int $lastAffected = 0;
    public int $lastWarnings = 0;
    /** The last result's column definitions as the driver reports them. */
    public ?array $lastMeta = null;

    public function q(string $sql, array $params = [], bool $prepared = false): array
    {
        if ($this->pdo !== null) {
            $this->pdo->setAttribute(PDO::ATTR_EMULATE_PREPARES, !$prepared);
            if (!$params && !$prepared) {
                $st = $this->pdo->query($sql);
            } else {
                $st = $this->pdo->prepare($sql);
                foreach (array_values($params) as $k => $v) {
                    $type = match (true) {
                        is_int($v) => PDO::PARAM_INT,
                        $v === null => PDO::PARAM_NULL,
                        default => PDO::PARAM_STR,
                    };
                    if ($v instanceof Lob) {
                        $h = fopen('php://memory', 'r+b');
                        fwrite($h, $v->bytes);
                        rewind($h);
                        $st->bindValue($k + 1, $h, PDO::PARAM_LOB);
                    } else {
                        $st->bindValue($k + 1, $v, $type);
                    }
                }
                $st->execute();
            }
            if ($st->columnCount() === 0) {
                $this->lastAffected = $st->rowCount();
                $st->closeCursor();
                return ['affected' => $this->lastAffected];
            }
            $this->lastMeta = [];
            for ($i = 0; $i < $st->columnCount(); $i++) {
                $m = $st->getColumnMeta($i);
                $this->lastMeta[] = [$m['native_type'] ?? null, $m['len'] ?? null, $m['flags'] ?? []];
            }
            $rows = $st->fetchAll(PDO::FETCH_NUM);
            $st->closeCursor();
            return $rows;
        }
        $params = array_map(fn ($v) => $v instanceof Lob ? $v->bytes : $v, $params);
        if ($prepared) {
            $st = $this->my->prepare($sql);
            if ($params) {
                $types = implode('', array_map(fn ($v) => is_int($v) ? 'i' : (is_float($v) ? 'd' : 's'), $params));
                $st->bind_param($types, ...$params);
            }
            $st->execute();
            $res = $st->get_result();
            $this->lastWarnings = $this->my->warning_count;
            if ($res === false) {
                $this->lastAffected = $st->affected_rows;
                $st->close();
                return ['affected' => $this->lastAffected];
            }
            $this->lastMeta = mysqli_meta($res);
            $rows = $res->fetch_all(MYSQLI_NUM);
            $st->close();
            return $rows;
        }
        // Text protocol: the parameters are escaped into the statement.
        $i = 0;
        $sql = preg_replace_callback('/\?/', function () use (&$i, $params) {
            $v = $params[$i++];
            return match (true) {
                $v === null => 'NULL',
                is_int($v), is_float($v) => var_export($v, true),
                default => "'" . $this->my->real_escape_string($v) . "'",
            };
        }, $sql);
        $res = $this->my->query($sql);
        $this->lastWarnings = $this->my->warning_count;
        if ($res === true) {
            $this->lastAffected = $this->my->affected_rows;
            return ['affected' => $this->lastAffected];
        }
        $this->lastMeta = mysqli_meta($res);
        $rows = $res->fetch_all(MYSQLI_NUM);
        $res->free();
        return $rows;
    }

    public function one(string $sql, array $params = [], bool $prepared = false): mixed
    {
        return $this->q($sql, $params, $prepared)[0][0];
    }

    public function insertId(): string
    {
        return $this->pdo !== null ? $this->pdo->lastInsertId() : (string) $this->my->insert_id;
    }

    /** The handshake's thread id, where the driver shows it. */
    public function threadId(): ?int
    {
        return $this->my?->thread_id;
    }

    public function begin(): void
    {
        $this->pdo ? $this->pdo->beginTransaction() : $this->my->begin_transaction();
    }

    public function commit(): void
    {
        $this->pdo ? $this->pdo->commit() : $this->my->commit();
    }

    public function rollback(): void
    {
        $this->pdo ? $this->pdo->rollBack() : $this->my->rollback();
    }

    /** PDO reads the server status flags (SERVER_STATUS_IN_TRANS); mysqli has no such call. */
    public function inTransaction(): ?bool
    {
        return $this->pdo?->inTransaction();
    }

    public function close(): void
    {
        try {
            $this->my?->close();
        } catch (Throwable) {
        }
        $this->my = null;
        $this->pdo = null;
    }
}

/** [type, flags, length] of each column of a mysqli result. */
function mysqli_meta(mysqli_result $res): array
{
    return array_map(fn ($f) => [$f->type, $f->flags, $f->length], $res->fetch_fields());
}

/** A value bound as a LOB (PDO::PARAM_LOB stream) where the driver has that. */
final class Lob
{
    public function __construct(public string $bytes)
    {
    }
}

function connect(array $over = []): Conn
{
    global $HOST, $PORT, $USER, $PASSWORD, $DB, $DRIVER;
    $db = array_key_exists('db', $over) ? $over['db'] : $DB;
    $charset = $over['charset'] ?? 'utf8mb4';
    $c = new Conn();
    if ($DRIVER === 'pdo') {
        $dsn = "mysql:host=$HOST;port=$PORT;charset=$charset" . ($db === null ? '' : ";dbname=$db");
        $c->pdo = new PDO($dsn, $USER, $PASSWORD, [
            PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
            PDO::ATTR_EMULATE_PREPARES => false,
            PDO::ATTR_AUTOCOMMIT => $over['autocommit'] ?? true,
        ]);
    } else {
        $my = mysqli_init();
        $my->options(MYSQLI_SET_CHARSET_NAME, $charset);
        $my->real_connect($HOST, $USER, $PASSWORD, $db, $PORT);
        if (isset($over['autocommit'])) {
            $my->autocommit($over['autocommit']);
        }
        $c->my = $my;
    }
    return $c;
}

// ---------------------------------------------------------------- helpers

/** A value as 'type:text', so that the driver's type shows in the output. */
function norm(mixed $v): mixed
{
    if ($v === null) {
        return null;
    }
    if (is_string($v) && (strlen($v) > 64 || !preg_match('//u', $v))) {
        return strlen($v) > 64 ? sprintf('string:len=%d,md5=%s', strlen($v), md5($v)) : 'string:hex=' . bin2hex($v);
    }
    return get_debug_type($v) . ':' . (is_float($v) ? var_export($v, true) : (is_bool($v) ? var_export($v, true) : (string) $v));
}

/** Rows and the result's column definitions (drivers decode by them). */
function typed(Conn $c, string $sql, array $params = [], bool $prepared = false): array
{
    $rows = norm_rows($c->q($sql, $params, $prepared));
    return ['rows' => $rows, 'types' => $c->lastMeta];
}

function norm_rows(array $rows): array
{
    if (isset($rows['affected'])) {
        return $rows;
    }
    return array_map(fn ($r) => array_map('norm', $r), $rows);
}

function error_of(Throwable $e): array
{
    if ($e instanceof PDOException && isset($e->errorInfo[1])) {
        return [(int) $e->errorInfo[1], (string) $e->errorInfo[2]];
    }
    if ($e instanceof mysqli_sql_exception) {
        return [$e->getCode(), $e->getMessage()];
    }
    return [null, get_class($e) . ': ' . $e->getMessage()];
}

/** One step of a check: its value, or ['error' => [code, msg]]. */
function step(callable $fn): mixed
{
    try {
        return $fn();
    } catch (Throwable $e) {
        return ['error' => error_of($e)];
    }
}

$MODES = ['text' => false, 'prepared' => true];

// ---------------------------------------------------------------- checks

$CHECKS = [];

const SELECT_TYPES = "SELECT 1 AS i, -9223372036854775808 AS big, 18446744073709551615 AS ubig, "
    . "'abc' AS s, 1.50 AS d, 2.5e0 AS f, NULL AS n, DATE '2024-02-29' AS dt, "
    . "TIMESTAMP '2024-02-29 12:34:56.789' AS ts, TIME '-12:34:56' AS tm, "
    . "x'00ff' AS bin, 'ünï🐬' AS u, CAST(7 AS UNSIGNED) AS un, 1 = 1 AS b";

$CHECKS['select_types'] = function () use ($MODES) {
    $c = connect();
    $out = [];
    foreach ($MODES as $how => $prepared) {
        $out[$how] = step(fn () => norm_rows($c->q(SELECT_TYPES . ', ? AS p', [7], $prepared)));
    }
    $c->close();
    return $out;
};

$CHECKS['prepared_params'] = function () use ($MODES, $P) {
    $c = connect();
    $t = "{$P}_pp";
    $c->q("DROP TABLE IF EXISTS $t");
    $c->q("CREATE TABLE $t (id INT AUTO_INCREMENT PRIMARY KEY, n BIGINT, s VARCHAR(100), "
        . 'b BLOB, f DOUBLE, dt DATETIME(3), maybe INT NULL) CHARACTER SET utf8mb4');
    $all = implode('', array_map('chr', range(0, 255)));
    $rows = [
        [PHP_INT_MAX, "it's \"quoted\" \\ ünïcödé 🐬", $all, '1.25', '2024-02-29 12:34:56.789', null],
        [PHP_INT_MIN, '', '', '-0.5', '1999-12-31 23:59:59', 3],
    ];
    $out = [];
    foreach ($MODES as $how => $prepared) {
        $out[$how] = step(function () use ($c, $t, $rows, $prepared) {
            $c->q("DELETE FROM $t");
            foreach ($rows as $r) {
                $c->q("INSERT INTO $t (n, s, b, f, dt, maybe) VALUES (?, ?, ?, ?, ?, ?)", $r, $prepared);
            }
            return [
                'rows' => norm_rows($c->q("SELECT n, s, b, f, dt, maybe FROM $t WHERE n > ? AND s LIKE ? ORDER BY id",
                    [PHP_INT_MIN, '%ü%'], $prepared)),
                'count' => norm_rows($c->q("SELECT COUNT(*) FROM $t WHERE maybe IS NULL OR maybe = ?", [3], $prepared)),
            ];
        });
    }
    $c->close();
    return $out;
};

$CHECKS['transaction'] = function () use ($P) {
    $t = "{$P}_tx";
    $c = connect();
    $c->q("DROP TABLE IF EXISTS $t");
    $c->q("CREATE TABLE $t (id INT PRIMARY KEY, s VARCHAR(20))");
    $out = [];
    $out['explicit'] = step(function () use ($c, $t) {
        $r = [];
        $c->begin();
        $c->q("INSERT INTO $t VALUES (1, 'rolled back')", [], true);
        $r['in_trans'] = $c->inTransaction();
        $c->rollback();
        $r['in_trans_after_rollback'] = $c->inTransaction();
        $r['after_rollback'] = norm($c->one("SELECT COUNT(*) FROM $t"));
        $c->begin();
        $c->q("INSERT INTO $t VALUES (2, 'committed')");
        $c->commit();
        $r['in_trans_after_commit'] = $c->inTransaction();
        $r['after_commit'] = norm($c->one("SELECT COUNT(*) FROM $t"));
        return $r;
    });
    $out['autocommit_off'] = step(function () use ($t) {
        $r = [];
        $a = connect(['autocommit' => false]);
        try {
            $r['autocommit'] = norm($a->one('SELECT @@autocommit'));
            $a->q("INSERT INTO $t VALUES (3, 'ac off rollback')");
            $r['in_trans'] = $a->inTransaction();
            $a->q('ROLLBACK');
            $a->q("INSERT INTO $t VALUES (4, 'ac off commit')", [], true);
            $a->q('COMMIT');
            $r['seen_by_self'] = norm($a->one("SELECT GROUP_CONCAT(id ORDER BY id) FROM $t"));
            $a->q('COMMIT');
        } finally {
            $a->close();
        }
        return $r;
    });
    $out['final'] = step(fn () => norm_rows($c->q("SELECT id, s FROM $t ORDER BY id")));
    $c->close();
    return $out;
};

$CHECKS['last_insert_id'] = function () use ($MODES, $P) {
    $t = "{$P}_lid";
    $c = connect();
    $c->q("DROP TABLE IF EXISTS $t");
    $c->q("CREATE TABLE $t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)");
    $out = [];
    foreach ($MODES as $how => $prepared) {
        $out[$how] = step(function () use ($c, $t, $prepared) {
            $r = [];
            $c->q("INSERT INTO $t (v) VALUES (?)", [1], $prepared);
            $r['driver_single'] = $c->insertId();
            $r['sql_single'] = norm($c->one('SELECT LAST_INSERT_ID()'));
            $r['affected_multi'] = $c->q("INSERT INTO $t (v) VALUES (?), (?), (?)", [2, 3, 4], $prepared)['affected'];
            $r['driver_multi'] = $c->insertId();
            $r['sql_multi'] = norm($c->one('SELECT LAST_INSERT_ID()', [], $prepared));
            $c->q("UPDATE $t SET v = v + 1 WHERE id = ?", [1], $prepared);
            $r['sql_after_update'] = norm($c->one('SELECT LAST_INSERT_ID()'));
            return $r;
        });
    }
    $c->close();
    return $out;
};

$CHECKS['no_schema'] = function () {
    $out = [];
    for ($i = 0; $i < 3; $i++) {
        $a = connect();
        $a->one('SELECT 1');
        $a->close();
        $b = connect(['db' => null]);
        $out[] = step(fn () => norm($b->one('SELECT DATABASE()')));
        $b->close();
    }
    return $out;
};

$CHECKS['blob_20mb'] = function () use ($MODES, $P) {
    $t = "{$P}_blob";
    $data = random_bytes(20 * 1024 * 1024);
    $sum = md5($data);
    $c = connect();
    $c->q("DROP TABLE IF EXISTS $t");
    $c->q("CREATE TABLE $t (id INT PRIMARY KEY, b LONGBLOB)");
    $c->close();
    $out = [];
    $id = 0;
    // PDO: native prepares with a PDO::PARAM_LOB stream, and emulated ones
    // (an escaped string literal); mysqli: bind_param 's', and an escaped literal.
    foreach ($MODES as $how => $prepared) {
        $id++;
        $out[$how] = step(function () use ($t, $data, $sum, $prepared, $id) {
            $r = [];
            $c = connect();
            try {
                $c->q("INSERT INTO $t VALUES (?, ?)", [$id, new Lob($data)], $prepared);
                [$len, $serverMd5] = $c->q("SELECT LENGTH(b), MD5(b) FROM $t WHERE id = ?", [$id], $prepared)[0];
                $r['length'] = norm($len);
                $r['server_md5_ok'] = $serverMd5 === $sum;
                $back = $c->one("SELECT b FROM $t WHERE id = ?", [$id], $prepared);
                $r['bytes_length'] = strlen($back);
                $r['bytes_md5_ok'] = md5($back) === $sum;
                $r['after'] = norm($c->one('SELECT 1'));
            } finally {
                $c->close();
            }
            return $r;
        });
    }
    $c = connect();
    $c->q("DROP TABLE IF EXISTS $t");
    $c->close();
    return $out;
};

$CHECKS['proc_out_param'] = function () use ($P) {
    $c = connect();
    $p = "{$P}_p";
    $c->q("DROP PROCEDURE IF EXISTS $p");
    $c->q("CREATE PROCEDURE $p(IN a INT, OUT b INT) SET b = a * 2");
    $out = [];
    $out['call_out'] = step(function () use ($c, $p) {
        $c->q("CALL $p(5, @out)");
        return typed($c, 'SELECT @out');
    });
    $out['select_into'] = step(function () use ($c) {
        $c->q('SELECT 42 INTO @v');
        return norm($c->one('SELECT @v'));
    });
    $out['set_assign'] = step(function () use ($c) {
        $c->q('SET @a := 7 + 1');
        return norm($c->one('SELECT @a'));
    });
    $out['typed'] = step(function () use ($c) {
        $c->q("SET @s := 'text', @dec := 1.25, @dbl := 0.5e0, @nul := NULL, @neg := -3");
        return [typed($c, 'SELECT @s, @dec, @dbl, @nul, @neg'),
            typed($c, 'SELECT @s, @dec, @dbl, @nul, @neg', [], true)];
    });
    $out['all_later'] = step(function () use ($c) {
        $c->one('SELECT 1');
        return norm_rows($c->q('SELECT @out, @v, @a, @s, @dec'));
    });
    $out['call_prepared'] = step(function () use ($c, $p) {
        $c->q("CALL $p(?, @out2)", [21], true);
        return [norm($c->one('SELECT @out2')), norm($c->one('SELECT @out2', [], true))];
    });
    $c->close();
    return $out;
};

const CHARSET_VARS = 'SELECT @@character_set_client, @@character_set_connection, '
    . '@@character_set_results, @@collation_connection';

$CHECKS['set_names'] = function () {
    $c = connect(['charset' => 'latin1']);
    $out = ['at_connect' => step(fn () => norm_rows($c->q(CHARSET_VARS)))];
    $c->q('SET NAMES utf8mb4');
    $out['after_set_names'] = [];
    for ($i = 0; $i < 3; $i++) {
        $out['after_set_names'][] = step(function () use ($c, $i) {
            $c->q('SELECT ?', [$i], $i === 1);
            return norm_rows($c->q(CHARSET_VARS, [], $i === 2));
        });
    }
    $c->q('SET NAMES latin1 COLLATE latin1_bin');
    $out['after_collate'] = step(function () use ($c) {
        $c->q('DO 1');
        return norm_rows($c->q(CHARSET_VARS));
    });
    $c->close();
    return $out;
};

$CHECKS['warnings'] = function () use ($P, $DRIVER) {
    $t = "{$P}_w";
    $c = connect();
    $out = [];
    $c->q("SET SESSION sql_mode = ''");
    $c->q("DROP TABLE IF EXISTS $t");
    $c->q("CREATE TABLE $t (c CHAR(2))");
    $c->q("INSERT INTO $t VALUES ('abcdef'), ('xyz'), ('ok')");
    if ($DRIVER === 'mysqli') {
        $out['driver_warning_count'] = $c->lastWarnings;
    }
    // Longer than any hold of the connection that ran the INSERT.
    usleep(1_000_000);
    $out['show_warnings'] = step(fn () => typed($c, 'SHOW WARNINGS'));
    $out['show_count'] = step(fn () => typed($c, 'SHOW COUNT(*) WARNINGS'));
    $out['warning_count'] = step(fn () => typed($c, 'SELECT @@warning_count'));
    $out['error_count'] = step(fn () => typed($c, 'SELECT @@error_count', [], true));
    $out['found_rows'] = step(function () use ($c, $t) {
        $c->q("SELECT SQL_CALC_FOUND_ROWS * FROM $t LIMIT 1");
        usleep(300_000);
        return typed($c, 'SELECT FOUND_ROWS()');
    });
    $out['row_count'] = step(function () use ($c, $t) {
        $c->q("UPDATE $t SET c = 'q' WHERE c LIKE 'a%'");
        usleep(300_000);
        return typed($c, 'SELECT ROW_COUNT()', [], true);
    });
    $out['prepared_insert'] = step(function () use ($c, $t) {
        $c->q("INSERT INTO $t VALUES (?)", ['toolong'], true);
        usleep(300_000);
        return typed($c, 'SHOW WARNINGS', [], true);
    });
    $c->close();
    return $out;
};

$CHECKS['read_after_write_new_conn'] = function () use ($P) {
    $t = "{$P}_raw";
    $a = connect();
    $a->q("DROP TABLE IF EXISTS $t");
    $a->q("CREATE TABLE $t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)");
    $counts = [];
    for ($i = 0; $i < 5; $i++) {
        $a->begin();
        $a->q("INSERT INTO $t (v) VALUES (?), (?)", [$i, $i], $i % 2 === 1);
        $a->commit();
        $b = connect();
        $counts[] = step(fn () => norm($b->one("SELECT COUNT(*) FROM $t", [], $i % 2 === 0)));
        $b->close();
    }
    $a->close();
    return $counts;
};

$CHECKS['connection_id'] = function () use ($DRIVER) {
    $c = connect();
    $first = $c->one('SELECT CONNECTION_ID()');
    $c->one('SELECT 1');
    $second = $c->one('SELECT CONNECTION_ID()');
    $third = $c->one('SELECT CONNECTION_ID()', [], true);
    $out = ['same' => $first == $second, 'prepared_same' => $first == $third];
    if ($DRIVER === 'mysqli') {
        $out['equals_handshake'] = $c->threadId() == $first;
    }
    $c->close();
    return $out;
};

/** The killer: a child process (PHP has no threads) that sends KILL QUERY after 0.5 s. */
function spawn_killer(int|string $victim)
{
    global $argv, $HOST, $PORT, $USER, $PASSWORD, $DB, $DRIVER;
    $cmd = [PHP_BINARY, $argv[0], '--driver', $DRIVER, '--kill', (string) $victim,
        $HOST, (string) $PORT, $USER, $PASSWORD, $DB];
    $proc = proc_open($cmd, [1 => ['pipe', 'w']], $pipes);
    return [$proc, $pipes[1]];
}

function run_killer(string $victim): void
{
    $c = connect();
    usleep(500_000);
    $r = step(function () use ($c, $victim) {
        $c->q("KILL QUERY $victim");
        return 'ok';
    });
    if (is_array($r)) {
        $r['error'][1] = str_replace($victim, '<victim>', $r['error'][1]);
    }
    echo json_encode($r), "\n";
    $c->close();
}

$CHECKS['kill_query'] = function () use ($MODES) {
    $out = [];
    foreach ($MODES as $how => $prepared) {
        $c1 = connect();
        $victim = $c1->one('SELECT CONNECTION_ID()');
        [$proc, $pipe] = spawn_killer($victim);
        $t0 = microtime(true);
        try {
            $outcome = ['rows', norm_rows($c1->q('SELECT SLEEP(10)', [], $prepared))];
        } catch (Throwable $e) {
            $outcome = ['error', error_of($e)[0]];
        }
        $fast = microtime(true) - $t0 < 5;
        $kill = json_decode(trim(stream_get_contents($pipe)), true);
        fclose($pipe);
        proc_close($proc);
        $out[$how] = [
            'kill' => $kill,
            'victim' => ['outcome' => $outcome, 'fast' => $fast],
            'victim_after' => step(fn () => norm($c1->one('SELECT 1'))),
        ];
        $c1->close();
    }
    $c2 = connect();
    $out['unknown_id'] = step(function () use ($c2) {
        $c2->q('KILL QUERY 999999');
        return 'ok';
    });

    // KILL <id> closes that client: its next statement fails (how depends on
    // timing, so only whether it fails is printed); the killer goes on.
    $c3 = connect();
    $third = (string) $c3->one('SELECT CONNECTION_ID()');
    $kill = step(function () use ($c2, $third) {
        $c2->q("KILL $third");
        return 'ok';
    });
    if (is_array($kill)) {
        $kill['error'][1] = str_replace($third, '<victim>', $kill['error'][1]);
    }
    usleep(200_000);
    try {
        // (mysqlnd also warns about the lost connection.)
        @$c3->one('SELECT 1');
        $fails = false;
    } catch (Throwable) {
        $fails = true;
    }
    $out['kill_connection'] = [
        'kill' => $kill,
        'victim_fails' => $fails,
        'killer_after' => step(fn () => norm($c2->one('SELECT 1'))),
    ];
    $c3->close();
    $c2->close();
    return $out;
};

$CHECKS['conn_attrs'] = function () use ($P) {
    // mysqlnd sends its own attributes (_client_name, _os, ...); PHP has no
    // way to add custom ones.
    $c = connect();
    $out = ['works' => norm($c->one('SELECT 1'))];
    $ps = $c->one('SELECT /* sluice:primary */ @@performance_schema');
    $out['performance_schema'] = norm($ps);
    if ($ps) {
        $marker = "$P-attrs-" . bin2hex(random_bytes(8));
        // The backend connection that runs this very query, found by the
        // marker in its text (CONNECTION_ID() would be the client's own). The
        // hint (a comment to the server) keeps both reads on the primary in
        // split mode: the test topology has performance_schema only there.
        $sql = "SELECT /* sluice:primary */ /* $marker */ a.ATTR_NAME, a.ATTR_VALUE "
            . 'FROM performance_schema.session_connect_attrs a '
            . 'JOIN information_schema.PROCESSLIST p ON p.ID = a.PROCESSLIST_ID '
            . "WHERE p.INFO LIKE '%$marker%' "
            . "AND a.ATTR_NAME IN ('program_name', 'app_name', 'sluice_case') "
            . 'ORDER BY a.ATTR_NAME';
        $out['attrs'] = step(fn () => norm_rows($c->q($sql)));
    }
    $c->close();
    return $out;
};

// ---------------------------------------------------------------- main

if ($opts['kill'] !== null) {
    run_killer($opts['kill']);
    exit(0);
}
foreach (array_merge($opts['only'], $opts['skip']) as $n) {
    if (!isset($CHECKS[$n])) {
        fwrite(STDERR, "unknown check $n (checks: " . implode(', ', array_keys($CHECKS)) . ")\n");
        exit(2);
    }
}
foreach ($CHECKS as $name => $fn) {
    if (($opts['only'] && !in_array($name, $opts['only'], true)) || in_array($name, $opts['skip'], true)) {
        continue;
    }
    try {
        $line = ['check' => $name, 'result' => $fn()];
    } catch (Throwable $e) {
        fwrite(STDERR, "$name: $e\n");
        $line = ['check' => $name, 'error' => error_of($e)];
    }
    echo json_encode($line, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
}
