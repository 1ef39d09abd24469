#!/usr/bin/env sysbench
-- Write-then-read loop: each event updates one row (autocommit) and reads it
-- back on the same connection, the shape read-your-writes exists for.
-- Runs on sysbench's oltp tables (bench/run.sh prepares them).
require("oltp_common")

function prepare_statements()
end

function event()
  local tbl = "sbtest" .. sysbench.rand.uniform(1, sysbench.opt.tables)
  local id = sysbench.rand.default(1, sysbench.opt.table_size)
  con:query(string.format("UPDATE %s SET k = k + 1 WHERE id = %d", tbl, id))
  con:query(string.format("SELECT k FROM %s WHERE id = %d", tbl, id))
end
