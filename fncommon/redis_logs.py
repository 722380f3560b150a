"""Bounded per-service logs in Redis (the forecast function's forecasts, the scale function's
decisions), written by one script call per batch of services: 10,000 services are 20 calls, not
40,000 commands.

APPEND_LOGS pushes one line per list (KEYS; the lines: ARGV[3], ARGV[4], ... in the order of
KEYS, each encoded once, not again inside a JSON array the script decodes), keeps the newest
ARGV[1] + 1 and refreshes the TTL (ARGV[2]). Register it with `client.register_script`.
"""

from __future__ import annotations

APPEND_LOGS = """
local last, ttl = tonumber(ARGV[1]), ARGV[2]
for i, key in ipairs(KEYS) do
  redis.call('LPUSH', key, ARGV[i + 2])
  redis.call('LTRIM', key, 0, last)
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""
