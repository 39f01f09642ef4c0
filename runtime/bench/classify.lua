-- Load for feelings-serve with wrk (Debian's `wrk`): every request classifies one review long
-- enough to fill 256 tokens. wrk keeps -c connections busy (closed loop) and reports latency,
-- requests/s and "Non-2xx or 3xx responses" (the 503s of load shedding).
--
--   wrk -t2 -c2 -d30s --latency -s runtime/bench/classify.lua http://127.0.0.1:8080/v1/classify
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"text": "' .. string.rep(
  "This film was a quiet delight, with honest acting and a story that stays with you. ", 15
) .. '"}'
