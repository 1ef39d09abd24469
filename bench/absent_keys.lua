#!/usr/bin/env sysbench
-- A flood of point selects of ids that do not exist (above --table-size), the
-- load the empty-key guard is for. Prepared or text per --db-ps-mode, on
-- sysbench's oltp tables (bench/run.sh prepares them).
require("oltp_common")

function prepare_statements()
  prepare_point_selects()
end

function event()
  local tnum = sysbench.rand.uniform(1, sysbench.opt.tables)
  local id = sysbench.opt.table_size + sysbench.rand.uniform(1, 1000000000)
  param[tnum].point_selects[1]:set(id)
  stmt[tnum].point_selects:execute()
end
