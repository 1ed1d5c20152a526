-- wsgate's durable publish: record the message in the channel's history
-- stream and publish it with its position, atomically.
-- KEYS: wsgate:history:{ch}, wsgate:epoch:{ch}, wsgate:trimmed:{ch}
-- ARGV: channel, payload, size, ttl (ms), a new epoch (12 hex), marker
-- bridge/redis.go embeds this file; clients/python/wsgate/publish.lua is a
-- byte-equal copy that the Python tests compare with this one.
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[2], epoch)
end
local id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[2])
local trimmed = false
local over = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[3])
if over > 0 then
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over)
  trimmed = old[#old][1]
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[3])
end
local t = redis.call('TIME')
local cut = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[4])
if cut > 0 then
  local older = redis.call('XREVRANGE', KEYS[1], '(' .. cut .. '-0', '-', 'COUNT', 1)
  if #older > 0 then
    trimmed = older[1][1]
    redis.call('XTRIM', KEYS[1], 'MINID', cut .. '-0')
  end
end
if trimmed then redis.call('SET', KEYS[3], trimmed) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('PUBLISH', ARGV[1], ARGV[6] .. epoch .. ':' .. id .. '\n' .. ARGV[2])
return id
