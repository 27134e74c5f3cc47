-- One request shape for wrk, configured by the environment (bench/run.py sets it):
--   BENCH_METHOD  GET or POST
--   BENCH_PATH    the path; "{id}" in it becomes a random id from 1 to BENCH_IDS
--   BENCH_IDS     the largest id (0: the path is sent as it is)
--   BENCH_LINES   POST /orders/ bodies: this many lines of distinct random products
--                 (1 to BENCH_PRODUCTS), quantity 1 each
--   BENCH_TOKEN   a bearer token for the Authorization header (empty: none)
-- Each thread draws from its own fixed seed. done() prints one line, "BENCH_JSON {...}", with
-- the counts and the latency percentiles (microseconds) that run.py reads.

local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local ids = tonumber(os.getenv("BENCH_IDS") or "0")
local lines = tonumber(os.getenv("BENCH_LINES") or "0")
local products = tonumber(os.getenv("BENCH_PRODUCTS") or "0")
local token = os.getenv("BENCH_TOKEN") or ""

local created = 0

function setup(thread)
  created = created + 1
  thread:set("seed", created)
end

local headers = {}

function init(args)
  math.randomseed(seed or 1)
  if token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  if lines > 0 then
    headers["Content-Type"] = "application/json"
  end
end

local function order_body()
  local parts, seen = {}, {}
  while #parts < lines do
    local id = math.random(1, products)
    if not seen[id] then
      seen[id] = true
      parts[#parts + 1] = string.format('{"product_id":%d,"quantity":1}', id)
    end
  end
  return '{"items":[' .. table.concat(parts, ",") .. ']}'
end

function request()
  local target = path
  if ids > 0 then
    target = (string.gsub(path, "{id}", tostring(math.random(1, ids))))
  end
  if lines > 0 then
    return wrk.format(method, target, headers, order_body())
  end
  return wrk.format(method, target, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
      .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
