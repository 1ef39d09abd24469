#!/usr/bin/env node
// Real-driver checks for Node mysql2, text protocol (`query`) and prepared
// statements (`execute`). Run by tests/tests/drivers.rs with the packages
// scripts/install-deps.sh installs (tests/drivers/node/node_modules):
//
//   node tests/drivers/node/checks.js [--prefix P] [--only CHECK]... [--skip CHECK]...
//        HOST PORT USER PASSWORD DB
//
// Prints one JSON object per check, one a line:
//   {"check": NAME, "result": ...}        what the check saw
//   {"check": NAME, "error": [CODE, MSG]}  the check itself broke
// A step inside a check that gets a server error records {"error": [CODE, MSG]}
// in its place, so that a run against MariaDB directly and one through Sluice
// can be compared check by check (the server is the oracle). Nothing printed
// depends on the connection (ids, timings): those are reduced to booleans.
//
// Tables and routines: PREFIX_* (PREFIX defaults to drv_mysql2).

'use strict';

const crypto = require('node:crypto');
const mysql = require('mysql2/promise');

// ---------------------------------------------------------------- arguments

const argv = process.argv.slice(2);
const opts = { only: [], skip: [], prefix: 'drv_mysql2' };
const positional = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--only' || a === '--skip') opts[a.slice(2)].push(argv[++i]);
  else if (a === '--prefix') opts.prefix = argv[++i];
  else positional.push(a);
}
if (positional.length !== 5) {
  process.stderr.write('usage: checks.js [--prefix P] [--only C]... [--skip C]... HOST PORT USER PASSWORD DB\n');
  process.exit(2);
}
const [host, port, user, password, database] = positional;
const P = opts.prefix;

function connect(over = {}) {
  const cfg = { host, port: Number(port), user, password, database, charset: 'UTF8MB4_GENERAL_CI', ...over };
  if (cfg.database === null) delete cfg.database;
  return mysql.createConnection(cfg);
}

// ---------------------------------------------------------------- helpers

/** A value as 'type:text', so that the driver's type shows in the output. */
function norm(v) {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) {
    if (v.length > 64) return `Buffer:len=${v.length},md5=${md5(v)}`;
    return `Buffer:${v.toString('hex')}`;
  }
  if (v instanceof Date) return `Date:${isNaN(v) ? 'Invalid' : v.toISOString()}`;
  if (Array.isArray(v)) return v.map(norm);
  if (typeof v === 'object') return `${v.constructor.name}:${JSON.stringify(v)}`;
  return `${typeof v}:${String(v)}`;
}

function md5(buf) {
  return crypto.createHash('md5').update(buf).digest('hex');
}

/** Rows (arrays of values, in column order) as normalized values. */
function normRows(rows) {
  return rows.map((r) => (Array.isArray(r) ? r : Object.values(r)).map(norm));
}

function errorOf(e) {
  if (e && typeof e.errno === 'number') return [e.errno, String(e.sqlMessage ?? e.message)];
  return [null, `${e && e.name}: ${e && e.message}`];
}

/** One step of a check: its value, or {"error": [code, msg]}. */
async function step(fn) {
  try {
    return await fn();
  } catch (e) {
    return { error: errorOf(e) };
  }
}

/** Runs a statement; text protocol unless `prepared`. Rows as arrays, or the OK header. */
let lastFields = null;

async function q(c, sql, params, prepared = false) {
  const [res, fields] = prepared ? await c.execute({ sql, rowsAsArray: true }, params ?? [])
    : await c.query({ sql, rowsAsArray: true }, params);
  lastFields = fields;
  return res;
}

/** Rows and the result's column definitions: [type, flags, length] (drivers decode by them). */
async function typed(c, sql, params, prepared = false) {
  const rows = normRows(await q(c, sql, params, prepared));
  return { rows, types: (lastFields ?? []).map((f) => [f.columnType, f.flags, f.columnLength]) };
}

async function one(c, sql, params, prepared = false) {
  const rows = await q(c, sql, params, prepared);
  return rows[0][0];
}

async function close(c) {
  try {
    await c.end();
  } catch {
    c.destroy();
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MODES = [['text', false], ['prepared', true]];

// ---------------------------------------------------------------- checks

const checks = [];
const check = (name, fn) => checks.push([name, fn]);

const SELECT_TYPES = "SELECT 1 AS i, -9223372036854775808 AS big, 18446744073709551615 AS ubig, "
  + "'abc' AS s, 1.50 AS d, 2.5e0 AS f, NULL AS n, DATE '2024-02-29' AS dt, "
  + "TIMESTAMP '2024-02-29 12:34:56.789' AS ts, TIME '-12:34:56' AS tm, "
  + "x'00ff' AS bin, 'ünï🐬' AS u, CAST(7 AS UNSIGNED) AS un, 1 = 1 AS b";

check('select_types', async () => {
  const c = await connect();
  const out = {};
  for (const [how, prepared] of MODES) {
    out[how] = await step(async () => normRows(await q(c, `${SELECT_TYPES}, ? AS p`, [7], prepared)));
  }
  const big = await connect({ supportBigNumbers: true, bigNumberStrings: true, dateStrings: true });
  for (const [how, prepared] of MODES) {
    out[`${how}_strings`] = await step(async () => normRows(await q(big, SELECT_TYPES, [], prepared)));
  }
  await close(big);
  await close(c);
  return out;
});

check('prepared_params', async () => {
  const c = await connect({ supportBigNumbers: true, bigNumberStrings: true, dateStrings: true });
  const t = `${P}_pp`;
  await q(c, `DROP TABLE IF EXISTS ${t}`);
  await q(c, `CREATE TABLE ${t} (id INT AUTO_INCREMENT PRIMARY KEY, n BIGINT, s VARCHAR(100), `
    + 'b BLOB, f DOUBLE, dt DATETIME(3), maybe INT NULL) CHARACTER SET utf8mb4');
  const rows = [
    ['9223372036854775807', 'it\'s "quoted" \\ ünïcödé 🐬', Buffer.from([...Array(256).keys()]), 1.25,
      '2024-02-29 12:34:56.789', null],
    ['-9223372036854775808', '', Buffer.alloc(0), -0.5, '1999-12-31 23:59:59', 3],
  ];
  const out = {};
  for (const [how, prepared] of MODES) {
    out[how] = await step(async () => {
      await q(c, `DELETE FROM ${t}`);
      for (const r of rows) {
        await q(c, `INSERT INTO ${t} (n, s, b, f, dt, maybe) VALUES (?, ?, ?, ?, ?, ?)`, r, prepared);
      }
      const got = await q(c, `SELECT n, s, b, f, dt, maybe FROM ${t} WHERE n > ? AND s LIKE ? ORDER BY id`,
        ['-9223372036854775808', '%ü%'], prepared);
      const got2 = await q(c, `SELECT COUNT(*) FROM ${t} WHERE maybe IS NULL OR maybe = ?`, [3], prepared);
      return { rows: normRows(got), count: normRows(got2) };
    });
  }
  await close(c);
  return out;
});

const IN_TRANS = 1;
const AUTOCOMMIT = 2;

check('transaction', async () => {
  const t = `${P}_tx`;
  const c = await connect();
  await q(c, `DROP TABLE IF EXISTS ${t}`);
  await q(c, `CREATE TABLE ${t} (id INT PRIMARY KEY, s VARCHAR(20))`);
  const out = {};
  out.explicit = await step(async () => {
    const r = {};
    await c.beginTransaction();
    const ins = await q(c, `INSERT INTO ${t} VALUES (1, 'rolled back')`);
    r.status_in_trans = Boolean(ins.serverStatus & IN_TRANS);
    r.status_autocommit = Boolean(ins.serverStatus & AUTOCOMMIT);
    await c.rollback();
    r.after_rollback = norm(await one(c, `SELECT COUNT(*) FROM ${t}`));
    await c.beginTransaction();
    await q(c, `INSERT INTO ${t} VALUES (2, 'committed')`, [], true);
    await c.commit();
    const after = await q(c, `UPDATE ${t} SET s = s WHERE id = 2`);
    r.status_after_commit = [Boolean(after.serverStatus & IN_TRANS), Boolean(after.serverStatus & AUTOCOMMIT)];
    r.after_commit = norm(await one(c, `SELECT COUNT(*) FROM ${t}`));
    return r;
  });
  out.autocommit_off = await step(async () => {
    const r = {};
    const a = await connect();
    try {
      await q(a, 'SET autocommit = 0');
      r.autocommit = norm(await one(a, 'SELECT @@autocommit'));
      const ins = await q(a, `INSERT INTO ${t} VALUES (3, 'ac off rollback')`);
      r.status = [Boolean(ins.serverStatus & IN_TRANS), Boolean(ins.serverStatus & AUTOCOMMIT)];
      await q(a, 'ROLLBACK');
      await q(a, `INSERT INTO ${t} VALUES (4, 'ac off commit')`, [], true);
      await q(a, 'COMMIT');
      r.seen_by_self = norm(await one(a, `SELECT GROUP_CONCAT(id ORDER BY id) FROM ${t}`));
      await q(a, 'COMMIT');
    } finally {
      await close(a);
    }
    return r;
  });
  out.final = await step(async () => normRows(await q(c, `SELECT id, s FROM ${t} ORDER BY id`)));
  await close(c);
  return out;
});

check('last_insert_id', async () => {
  const t = `${P}_lid`;
  const c = await connect();
  await q(c, `DROP TABLE IF EXISTS ${t}`);
  await q(c, `CREATE TABLE ${t} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)`);
  const out = {};
  for (const [how, prepared] of MODES) {
    out[how] = await step(async () => {
      const r = {};
      r.driver_single = (await q(c, `INSERT INTO ${t} (v) VALUES (?)`, [1], prepared)).insertId;
      r.sql_single = norm(await one(c, 'SELECT LAST_INSERT_ID()'));
      const multi = await q(c, `INSERT INTO ${t} (v) VALUES (?), (?), (?)`, [2, 3, 4], prepared);
      r.driver_multi = multi.insertId;
      r.affected_multi = multi.affectedRows;
      r.sql_multi = norm(await one(c, 'SELECT LAST_INSERT_ID()', [], prepared));
      await q(c, `UPDATE ${t} SET v = v + 1 WHERE id = ?`, [1], prepared);
      r.sql_after_update = norm(await one(c, 'SELECT LAST_INSERT_ID()'));
      return r;
    });
  }
  await close(c);
  return out;
});

check('no_schema', async () => {
  const out = [];
  for (let i = 0; i < 3; i++) {
    const a = await connect();
    await one(a, 'SELECT 1');
    await close(a);
    const b = await connect({ database: null });
    out.push(await step(async () => norm(await one(b, 'SELECT DATABASE()'))));
    await close(b);
  }
  return out;
});

check('blob_20mb', async () => {
  const t = `${P}_blob`;
  const data = crypto.randomBytes(20 * 1024 * 1024);
  const sum = md5(data);
  let c = await connect();
  await q(c, `DROP TABLE IF EXISTS ${t}`);
  await q(c, `CREATE TABLE ${t} (id INT PRIMARY KEY, b LONGBLOB)`);
  await close(c);
  const out = {};
  for (const [i, [how, prepared]] of MODES.entries()) {
    out[how] = await step(async () => {
      const r = {};
      c = await connect();
      try {
        // The text form sends X'...' (40 MiB of hex); the prepared one the raw bytes.
        await q(c, `INSERT INTO ${t} VALUES (?, ?)`, [i, data], prepared);
        const [len, serverMd5] = (await q(c, `SELECT LENGTH(b), MD5(b) FROM ${t} WHERE id = ?`, [i], prepared))[0];
        r.length = norm(len);
        r.server_md5_ok = serverMd5 === sum;
        const back = await one(c, `SELECT b FROM ${t} WHERE id = ?`, [i], prepared);
        r.bytes_length = back.length;
        r.bytes_md5_ok = md5(back) === sum;
        r.after = norm(await one(c, 'SELECT 1'));
      } finally {
        await close(c);
      }
      return r;
    });
  }
  c = await connect();
  await q(c, `DROP TABLE IF EXISTS ${t}`);
  await close(c);
  return out;
});

check('proc_out_param', async () => {
  const c = await connect();
  const p = `${P}_p`;
  await q(c, `DROP PROCEDURE IF EXISTS ${p}`);
  await q(c, `CREATE PROCEDURE ${p}(IN a INT, OUT b INT) SET b = a * 2`);
  const out = {};
  out.call_out = await step(async () => {
    await q(c, `CALL ${p}(5, @out)`);
    return typed(c, 'SELECT @out');
  });
  out.select_into = await step(async () => {
    await q(c, 'SELECT 42 INTO @v');
    return norm(await one(c, 'SELECT @v'));
  });
  out.set_assign = await step(async () => {
    await q(c, 'SET @a := 7 + 1');
    return norm(await one(c, 'SELECT @a'));
  });
  out.typed = await step(async () => {
    await q(c, "SET @s := 'text', @dec := 1.25, @dbl := 0.5e0, @nul := NULL, @neg := -3");
    return [await typed(c, 'SELECT @s, @dec, @dbl, @nul, @neg'),
      await typed(c, 'SELECT @s, @dec, @dbl, @nul, @neg', [], true)];
  });
  out.all_later = await step(async () => {
    await one(c, 'SELECT 1');
    return normRows(await q(c, 'SELECT @out, @v, @a, @s, @dec'));
  });
  out.call_prepared = await step(async () => {
    await q(c, `CALL ${p}(?, @out2)`, [21], true);
    return [norm(await one(c, 'SELECT @out2')), norm(await one(c, 'SELECT @out2', [], true))];
  });
  await close(c);
  return out;
});

const CHARSET_VARS = 'SELECT @@character_set_client, @@character_set_connection, '
  + '@@character_set_results, @@collation_connection';

check('set_names', async () => {
  const c = await connect({ charset: 'LATIN1_SWEDISH_CI' });
  const out = { at_connect: await step(async () => normRows(await q(c, CHARSET_VARS))) };
  await q(c, 'SET NAMES utf8mb4');
  out.after_set_names = [];
  for (let i = 0; i < 3; i++) {
    out.after_set_names.push(await step(async () => {
      await q(c, 'SELECT ?', [i], i === 1);
      return normRows(await q(c, CHARSET_VARS, [], i === 2));
    }));
  }
  await q(c, 'SET NAMES latin1 COLLATE latin1_bin');
  out.after_collate = await step(async () => {
    await q(c, 'DO 1');
    return normRows(await q(c, CHARSET_VARS));
  });
  await close(c);
  return out;
});

check('warnings', async () => {
  const t = `${P}_w`;
  const c = await connect();
  const out = {};
  await q(c, "SET SESSION sql_mode = ''");
  await q(c, `DROP TABLE IF EXISTS ${t}`);
  await q(c, `CREATE TABLE ${t} (c CHAR(2))`);
  const ins = await q(c, `INSERT INTO ${t} VALUES ('abcdef'), ('xyz'), ('ok')`);
  out.driver_warning_count = ins.warningStatus;
  // Longer than any hold of the connection that ran the INSERT.
  await sleep(1000);
  out.show_warnings = await step(() => typed(c, 'SHOW WARNINGS'));
  out.show_count = await step(() => typed(c, 'SHOW COUNT(*) WARNINGS'));
  out.warning_count = await step(() => typed(c, 'SELECT @@warning_count'));
  out.error_count = await step(() => typed(c, 'SELECT @@error_count', [], true));
  out.found_rows = await step(async () => {
    await q(c, `SELECT SQL_CALC_FOUND_ROWS * FROM ${t} LIMIT 1`);
    await sleep(300);
    return typed(c, 'SELECT FOUND_ROWS()');
  });
  out.row_count = await step(async () => {
    await q(c, `UPDATE ${t} SET c = 'q' WHERE c LIKE 'a%'`);
    await sleep(300);
    return typed(c, 'SELECT ROW_COUNT()', [], true);
  });
  out.prepared_insert = await step(async () => {
    const r = await q(c, `INSERT INTO ${t} VALUES (?)`, ['toolong'], true);
    await sleep(300);
    return [r.warningStatus, await typed(c, 'SHOW WARNINGS', [], true)];
  });
  await close(c);
  return out;
});

check('read_after_write_new_conn', async () => {
  const t = `${P}_raw`;
  const a = await connect();
  await q(a, `DROP TABLE IF EXISTS ${t}`);
  await q(a, `CREATE TABLE ${t} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)`);
  const counts = [];
  for (let i = 0; i < 5; i++) {
    await a.beginTransaction();
    await q(a, `INSERT INTO ${t} (v) VALUES (?), (?)`, [i, i], i % 2 === 1);
    await a.commit();
    const b = await connect();
    counts.push(await step(async () => norm(await one(b, `SELECT COUNT(*) FROM ${t}`, [], i % 2 === 0))));
    await close(b);
  }
  await close(a);
  return counts;
});

check('connection_id', async () => {
  const c = await connect();
  const first = await one(c, 'SELECT CONNECTION_ID()');
  await one(c, 'SELECT 1');
  const second = await one(c, 'SELECT CONNECTION_ID()');
  const third = await one(c, 'SELECT CONNECTION_ID()', [], true);
  const out = { same: first === second, prepared_same: third === first, equals_handshake: c.threadId === first };
  await close(c);
  return out;
});

check('kill_query', async () => {
  const c1 = await connect();
  const c2 = await connect();
  const victim = await one(c1, 'SELECT CONNECTION_ID()');
  const out = {};
  const out2 = {};
  for (const [how, prepared] of MODES) {
    const t0 = Date.now();
    const running = q(c1, 'SELECT SLEEP(10)', [], prepared).then(
      (rows) => ['rows', normRows(rows)],
      (e) => ['error', errorOf(e)[0]],
    );
    await sleep(500);
    const kill = await step(async () => {
      await q(c2, `KILL QUERY ${victim}`);
      return 'ok';
    });
    if (kill.error) kill.error[1] = kill.error[1].replace(String(victim), '<victim>');
    const outcome = await running;
    out2[how] = { kill, victim: { outcome, fast: Date.now() - t0 < 5000 } };
    out2[how].victim_after = await step(async () => norm(await one(c1, 'SELECT 1')));
  }
  Object.assign(out, out2);
  out.unknown_id = await step(async () => {
    await q(c2, 'KILL QUERY 999999');
    return 'ok';
  });

  // KILL <id> closes that client: its next statement fails (how depends on
  // timing, so only whether it fails is printed); the killer goes on.
  const c3 = await connect();
  c3.on('error', () => {});
  const third = await one(c3, 'SELECT CONNECTION_ID()');
  const kill = await step(async () => {
    await q(c2, `KILL ${third}`);
    return 'ok';
  });
  if (kill.error) kill.error[1] = kill.error[1].replace(String(third), '<victim>');
  await sleep(200);
  let fails = false;
  try {
    await one(c3, 'SELECT 1');
  } catch {
    fails = true;
  }
  out.kill_connection = {
    kill,
    victim_fails: fails,
    killer_after: await step(async () => norm(await one(c2, 'SELECT 1'))),
  };
  c3.destroy();
  await close(c1);
  await close(c2);
  return out;
});

check('conn_attrs', async () => {
  const c = await connect({
    connectAttributes: { program_name: 'sluice-test', app_name: 'sluice-test', sluice_case: 'drivers' },
  });
  const out = { works: norm(await one(c, 'SELECT 1')) };
  const ps = await one(c, 'SELECT /* sluice:primary */ @@performance_schema');
  out.performance_schema = norm(ps);
  if (ps) {
    const marker = `${P}-attrs-${crypto.randomUUID()}`;
    // The backend connection that runs this very query, found by the marker
    // in its text (CONNECTION_ID() would be the client's own). The hint (a
    // comment to the server) keeps both reads on the primary in split mode:
    // the test topology has performance_schema only there.
    const sql = `SELECT /* sluice:primary */ /* ${marker} */ a.ATTR_NAME, a.ATTR_VALUE `
      + 'FROM performance_schema.session_connect_attrs a '
      + 'JOIN information_schema.PROCESSLIST p ON p.ID = a.PROCESSLIST_ID '
      + `WHERE p.INFO LIKE '%${marker}%' `
      + "AND a.ATTR_NAME IN ('program_name', 'app_name', 'sluice_case') "
      + 'ORDER BY a.ATTR_NAME';
    out.attrs = await step(async () => normRows(await q(c, sql)));
  }
  await close(c);
  return out;
});

// ---------------------------------------------------------------- main

async function main() {
  const names = checks.map(([n]) => n);
  for (const n of [...opts.only, ...opts.skip]) {
    if (!names.includes(n)) {
      process.stderr.write(`unknown check ${n} (checks: ${names.join(', ')})\n`);
      process.exit(2);
    }
  }
  for (const [name, fn] of checks) {
    if ((opts.only.length && !opts.only.includes(name)) || opts.skip.includes(name)) continue;
    let line;
    try {
      line = { check: name, result: await fn() };
    } catch (e) {
      process.stderr.write(`${name}: ${e && e.stack}\n`);
      line = { check: name, error: errorOf(e) };
    }
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${e && e.stack}\n`);
    process.exit(1);
  },
);
