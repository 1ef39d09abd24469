<?php
// Connect-per-query load, the way a plain PHP web app talks to MySQL:
// each iteration opens a PDO connection, runs one point select, disconnects.
//
//   php bench/connect_per_query.php HOST PORT USER PASS DB [SECONDS=10] [WORKERS=16] [TABLE_SIZE=10000]
//
// Prints sysbench-style lines ("queries: N (X per sec.)", "95th percentile: MS")
// so bench/run.sh parses both tools the same way. Latency = connect + query + close.
// Workers are separate php processes (started with proc_open, so pcntl is not needed).
// With BENCH_SSL_CA=PATH in the environment every connection uses TLS.

// A peer that accepts but never answers must not hang a worker for PHP's default 60 s.
ini_set('default_socket_timeout', '5');
ini_set('mysqlnd.net_read_timeout', '5');

if (($argv[1] ?? '') === '--worker') {
    [, , $dsn, $user, $pass, $seconds, $tableSize] = $argv;
    $options = [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION, PDO::ATTR_TIMEOUT => 5];
    // BENCH_SSL_CA set: every connection is TLS, the certificate checked
    // against that CA (as an application would).
    $ca = getenv('BENCH_SSL_CA');
    if ($ca !== false && $ca !== '') {
        $options[PDO::MYSQL_ATTR_SSL_CA] = $ca;
        $options[PDO::MYSQL_ATTR_SSL_VERIFY_SERVER_CERT] = true;
    }
    $deadline = hrtime(true) + (int)((float)$seconds * 1e9);
    $lat = [];
    $errors = 0;
    $firstError = '';
    $start = hrtime(true);
    while (($t0 = hrtime(true)) < $deadline) {
        try {
            $pdo = new PDO($dsn, $user, $pass, $options);
            $pdo->query('SELECT c FROM sbtest1 WHERE id = ' . mt_rand(1, (int)$tableSize))->fetchAll();
            $pdo = null; // disconnect (COM_QUIT)
            $lat[] = intdiv(hrtime(true) - $t0, 1000); // microseconds
        } catch (PDOException $e) {
            $pdo = null;
            $errors++;
            $firstError = $firstError ?: $e->getMessage();
        }
    }
    $elapsed = (hrtime(true) - $start) / 1e9;
    // Line 1: count, errors, elapsed seconds, first error; then one latency per line.
    echo count($lat), ' ', $errors, ' ', $elapsed, ' ', str_replace("\n", ' ', $firstError), "\n";
    echo implode("\n", $lat), "\n";
    exit(0);
}

if ($argc < 6) {
    fwrite(STDERR, "usage: php {$argv[0]} HOST PORT USER PASS DB [SECONDS] [WORKERS] [TABLE_SIZE]\n");
    exit(2);
}
[, $host, $port, $user, $pass, $db] = $argv;
$seconds = $argv[6] ?? '10';
$workers = (int)($argv[7] ?? 16);
$tableSize = $argv[8] ?? '10000';
$dsn = "mysql:host=$host;port=$port;dbname=$db";

$procs = [];
for ($i = 0; $i < $workers; $i++) {
    $cmd = [PHP_BINARY, __FILE__, '--worker', $dsn, $user, $pass, $seconds, $tableSize];
    $p = proc_open($cmd, [1 => ['pipe', 'w']], $pipes);
    if (!is_resource($p)) {
        fwrite(STDERR, "cannot start worker $i\n");
        exit(1);
    }
    $procs[] = [$p, $pipes[1]];
}

// Workers only write when their time is up, so reading them in turn is fine.
$all = [];
$qps = 0.0;
$ok = 0;
$errors = 0;
$firstError = '';
foreach ($procs as [$p, $out]) {
    $head = explode(' ', trim(fgets($out)), 4);
    $n = (int)$head[0];
    $ok += $n;
    $errors += (int)$head[1];
    $qps += $n / max((float)$head[2], 1e-9);
    $firstError = $firstError ?: ($head[3] ?? '');
    while (($line = fgets($out)) !== false) {
        if ($line !== "\n") {
            $all[] = (int)$line;
        }
    }
    fclose($out);
    proc_close($p);
}

sort($all);
$p95 = $all ? $all[(int)ceil(0.95 * count($all)) - 1] / 1000 : 0;
printf("    connections+queries: %d ok, %d errors\n", $ok, $errors);
printf("    queries: %d (%.2f per sec.)\n", $ok, $qps);
printf("         95th percentile: %.2f\n", $p95);
if ($errors > 0) {
    fwrite(STDERR, "connect_per_query: $errors errors, first: $firstError\n");
}
// Mostly-failing runs are not a measurement.
exit($errors > $ok ? 1 : 0);
