-- wrk script: POST a varied checkout JSON body to /api/checkout on every request.
--
-- Arguments after "--": RUN_ID EMAIL_MODE
--   RUN_ID      text that goes into every order id and unique email, so that each run sends
--               emails that no earlier run sent
--   EMAIL_MODE  "unique" gives every request a new email, so the deterministic email field
--               creates a new record each time. "repeat" draws the email from a pool of
--               REPEAT_POOL addresses, so after warm-up nearly every email is a store hit.
--
-- Card numbers are Luhn-valid, with a BIN from BINS and random further digits. The
-- X-Bench-Pan-Middle header carries the digits between the BIN and the last four, which lets
-- the benchmark upstream tell a raw PAN from a pan token (the token keeps the BIN and the last
-- four and always changes the middle).
--
-- done() prints one line "BENCH_RESULT {json}" with the request count, duration in
-- microseconds, error counts and latency percentiles in microseconds.

local REPEAT_POOL = 1000

-- Test BINs of Visa, Mastercard, Discover, JCB and American Express (15 digits), with the
-- card length of each.
local BINS = {
  {"424242", 16}, {"411111", 16}, {"400005", 16}, {"555555", 16}, {"510510", 16},
  {"222300", 16}, {"601111", 16}, {"353011", 16}, {"378282", 15}, {"371449", 15},
}

local FIRST_NAMES = {
  "Anna", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
  "Kemal", "Lena", "Marco", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tara",
  "Umar", "Vera", "Wei", "Ximena", "Yusuf", "Zoe", "Lukas", "Mia", "Noah", "Emma",
}
local LAST_NAMES = {
  "Schmidt", "Garcia", "Nguyen", "Rossi", "Kowalski", "Jensen", "Okafor", "Dubois", "Silva",
  "Tanaka", "Muller", "Novak", "Haddad", "Larsen", "Ivanova", "Costa", "Berg", "Moreau",
  "Fischer", "Lopez", "Weber", "Kim", "Santos", "Meyer", "Horvat", "Sato", "Bakker", "Popescu",
  "Wagner", "Eriksson",
}
local CITIES = {
  {"Berlin", "10115", "DE"}, {"Lyon", "69001", "FR"}, {"Porto", "4000-123", "PT"},
  {"Utrecht", "3511 AB", "NL"}, {"Krakow", "30-001", "PL"}, {"Aarhus", "8000", "DK"},
}

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("bench_thread_number", thread_count)
end

local thread_number = 1
local run_id = "run"
local email_mode = "unique"
local sequence = 0

function init(args)
  -- setup() set this global in the thread's own Lua state.
  thread_number = bench_thread_number or 1
  run_id = args[1] or run_id
  email_mode = args[2] or email_mode
  if email_mode ~= "unique" and email_mode ~= "repeat" then
    error("EMAIL_MODE must be unique or repeat, not " .. tostring(email_mode))
  end
  math.randomseed(os.time() * 1000 + thread_number)
end

-- Return the digit that, appended to payload, makes it pass the Luhn check.
local function luhn_check_digit(payload)
  local sum = 0
  local double = true
  for i = #payload, 1, -1 do
    local digit = payload:byte(i) - 48
    if double then
      digit = digit * 2
      if digit > 9 then digit = digit - 9 end
    end
    sum = sum + digit
    double = not double
  end
  return (10 - sum % 10) % 10
end

local function random_digits(count)
  local digits = {}
  for i = 1, count do digits[i] = math.random(0, 9) end
  return table.concat(digits)
end

local function card_number()
  local bin = BINS[math.random(#BINS)]
  local payload = bin[1] .. random_digits(bin[2] - 7)
  return payload .. luhn_check_digit(payload)
end

local BODY_FORMAT = '{"order_id":"ord_%s_%d_%d","amount":%d,"currency":"EUR",'
  .. '"email":"%s",'
  .. '"card":{"number":"%s","exp_month":%d,"exp_year":%d,"cvc":"%03d","name":"%s %s"},'
  .. '"billing_address":{"line1":"%d Market Street","city":"%s","postal_code":"%s","country":"%s"},'
  .. '"items":[{"sku":"SKU-%04d","quantity":%d,"unit_price":%d}],'
  .. '"metadata":{"channel":"web","cart_id":"cart_%d"}}'

function request()
  sequence = sequence + 1
  local first = FIRST_NAMES[math.random(#FIRST_NAMES)]
  local last = LAST_NAMES[math.random(#LAST_NAMES)]
  local email
  if email_mode == "unique" then
    email = string.format("%s.%s.%s.%d.%d@example.com", first:lower(), last:lower(), run_id,
      thread_number, sequence)
  else
    email = string.format("customer%04d@example.com", math.random(REPEAT_POOL))
  end
  local number = card_number()
  local city = CITIES[math.random(#CITIES)]
  local quantity = math.random(1, 3)
  local unit_price = math.random(199, 19999)
  local body = string.format(BODY_FORMAT,
    run_id, thread_number, sequence, quantity * unit_price,
    email,
    number, math.random(1, 12), math.random(2026, 2032), math.random(0, 999), first, last,
    math.random(1, 250), city[1], city[2], city[3],
    math.random(1, 9999), quantity, unit_price,
    math.random(1, 1000000))
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-Bench-Pan-Middle"] = number:sub(7, #number - 4),
  }
  return wrk.format("POST", "/api/checkout", headers, body)
end

function done(summary, latency, requests)
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"bytes":%d', summary.bytes),
    string.format('"errors_connect":%d', summary.errors.connect),
    string.format('"errors_read":%d', summary.errors.read),
    string.format('"errors_write":%d', summary.errors.write),
    string.format('"errors_status":%d', summary.errors.status),
    string.format('"errors_timeout":%d', summary.errors.timeout),
    string.format('"latency_mean_us":%.1f', latency.mean),
    string.format('"latency_max_us":%d', latency.max),
  }
  for _, p in ipairs({50, 90, 99, 99.9}) do
    table.insert(parts, string.format('"latency_p%s_us":%d', tostring(p), latency:percentile(p)))
  end
  io.write("BENCH_RESULT {" .. table.concat(parts, ",") .. "}\n")
end
