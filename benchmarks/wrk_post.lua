-- wrk -s benchmarks/wrk_post.lua ...: sends WRK_METHOD (default POST) with the
-- JSON body WRK_BODY (default a small create-room body) on every request, and
-- counts the answers by status, exactly, in a response() callback per thread.
-- It also keeps the "roomId" of every 201 (the room the server acknowledged);
-- with WRK_IDS_FILE set, done() writes them there, one a line.
-- At the end it prints one machine-readable line ("WRKJSON {...}") with the
-- fields of wrk_report.lua plus status_201, status_2xx_other, status_4xx,
-- status_5xx, status_other and ids_written.

wrk.method = os.getenv("WRK_METHOD") or "POST"
wrk.body = os.getenv("WRK_BODY") or '{"roomLocked":false,"metadata":{"title":"x"}}'
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  s201, s2xx, s4xx, s5xx, sother = 0, 0, 0, 0, 0
  ids = {}
end

function response(status, headers, body)
  if status == 201 then
    s201 = s201 + 1
    local id = body and string.match(body, '"roomId":"([%w%-]+)"')
    ids[#ids + 1] = id or "?"
  elseif status >= 200 and status < 300 then
    s2xx = s2xx + 1
  elseif status >= 400 and status < 500 then
    s4xx = s4xx + 1
  elseif status >= 500 then
    s5xx = s5xx + 1
  else
    sother = sother + 1
  end
end

done = function(summary, latency, requests)
  local c201, c2xx, c4xx, c5xx, cother, written = 0, 0, 0, 0, 0, 0
  local path = os.getenv("WRK_IDS_FILE")
  local out = path and io.open(path, "w")
  for _, t in ipairs(threads) do
    c201 = c201 + t:get("s201")
    c2xx = c2xx + t:get("s2xx")
    c4xx = c4xx + t:get("s4xx")
    c5xx = c5xx + t:get("s5xx")
    cother = cother + t:get("sother")
    if out then
      local tids = t:get("ids")
      for i = 1, #tids do
        out:write(tids[i], "\n")
        written = written + 1
      end
    end
  end
  if out then out:close() end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"latency_mean_us":%.1f,"latency_stdev_us":%.1f,"latency_max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"status_201":%d,"status_2xx_other":%d,"status_4xx":%d,"status_5xx":%d,"status_other":%d,"ids_written":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    c201, c2xx, c4xx, c5xx, cother, written))
end
