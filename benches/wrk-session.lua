-- wrk script of benches/load_bench.sh: GET /sessions/<key> (a route of hotplex-proxy's
-- public surface) with the API key and the key also in X-Hotplex-Session (what nginx and
-- HAProxy hash on), one of the session keys in BENCH_KEYS (comma-separated), round robin,
-- so requests spread over the workers by session-key routing; BENCH_PATH without keys. BENCH_CLOSE=1 adds `Connection: close` (a new
-- connection, i.e. a full TLS handshake over https, per request).
local keys = {}
for k in string.gmatch(os.getenv("BENCH_KEYS") or "", "[^,]+") do
  keys[#keys + 1] = k
end
local api_key = os.getenv("BENCH_API_KEY") or ""
local path = os.getenv("BENCH_PATH") or "/"
local close = os.getenv("BENCH_CLOSE") == "1"
local reqs = {}
local n = 0

init = function(args)
  local function build(key)
    local h = { ["X-API-Key"] = api_key }
    local p = path
    if key then
      h["X-Hotplex-Session"] = key
      p = "/sessions/" .. key
    end
    if close then h["Connection"] = "close" end
    return wrk.format("GET", p, h)
  end
  for i, k in ipairs(keys) do
    reqs[i] = build(k)
  end
  if #reqs == 0 then
    reqs[1] = build(nil)
  end
end

request = function()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end
