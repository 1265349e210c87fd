-- wrk script: POST a distinct, correctly signed callback per request.
-- Each thread reads the same pre-signed list "task_id timestamp signature" and takes every
-- n-th entry (offset by its thread number), so no two requests share a delivery.
-- The body is prefix .. task_id .. suffix, padded to the target size by the runner.

local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  local dir = args[1]
  nthreads = tonumber(args[2])
  prefix = read_file(dir .. "/prefix")
  suffix = read_file(dir .. "/suffix")
  entries = {}
  for line in io.lines(dir .. "/signed") do
    local task, ts, sig = line:match("^(%S+) (%S+) (%S+)$")
    table.insert(entries, {task, ts, sig})
  end
  counter = id + 1
  -- Optional third argument: milliseconds each connection waits between its requests,
  -- which turns wrk into an (approximately) fixed-rate generator.
  pause = tonumber(args[3] or "0")
end

function delay()
  return pause
end

function request()
  local e = entries[counter]
  counter = counter + nthreads
  if counter > #entries then
    counter = id + 1  -- wrapped: repeats are answered as duplicates (reported)
  end
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-Webhook-Timestamp"] = e[2],
    ["X-Webhook-Signature"] = e[3],
  }
  -- nil: the path of the URL wrk was given (the ingest, bare and Flask differ).
  return wrk.format("POST", nil, headers, prefix .. e[1] .. suffix)
end
