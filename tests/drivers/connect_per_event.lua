-- sysbench: one connection per event, as PHP-FPM makes one per request:
-- connect, one point select, disconnect. Any error ends the run (sysbench's
-- own reconnect after a lost connection crashes 1.0.20, so none is ignored).
-- Used by tests/tests/scaleout.rs (tables from oltp_point_select's prepare).

function thread_init()
  drv = sysbench.sql.driver()
end

function event()
  local con = drv:connect()
  con:query(string.format("SELECT c FROM sbtest1 WHERE id = %d", sysbench.rand.uniform(1, 1000)))
  con:disconnect()
end
