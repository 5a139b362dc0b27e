-- One approval vote or decision, atomically.
-- KEYS[1]: the record. ARGV: by, 'approve'|'deny', now, token ttl ms, retention ms,
-- preview hash, reason, 'final' (the confirmation agent's approval needs no quorum).
-- A voter counts once; a single denial denies; approval gives the token a fresh ttl.
-- Returns {outcome, status, approvals so far}.
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', '', '0'} end
local approvals = cjson.decode(redis.call('HGET', KEYS[1], 'approvals') or '[]')
if st ~= 'pending_approval' then return {'decided', st, tostring(#approvals)} end
if redis.call('HSETNX', KEYS[1], 'vote:' .. ARGV[1], ARGV[2]) == 0 then
  return {'duplicate', st, tostring(#approvals)}
end
local decisions = cjson.decode(redis.call('HGET', KEYS[1], 'decisions') or '[]')
decisions[#decisions + 1] = {by = ARGV[1], decision = ARGV[2], at = tonumber(ARGV[3]),
                             preview_hash = ARGV[6], reason = ARGV[7]}
redis.call('HSET', KEYS[1], 'decisions', cjson.encode(decisions))
if ARGV[2] == 'deny' then
  redis.call('HSET', KEYS[1], 'status', 'denied', 'decided_by', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'denied', 'denied', tostring(#approvals)}
end
approvals[#approvals + 1] = {by = ARGV[1], at = tonumber(ARGV[3])}
redis.call('HSET', KEYS[1], 'approvals', cjson.encode(approvals))
local quorum = tonumber(redis.call('HGET', KEYS[1], 'quorum') or '1')
if #approvals >= quorum or ARGV[8] == 'final' then
  local expires = tonumber(ARGV[3]) + tonumber(ARGV[4]) / 1000
  redis.call('HSET', KEYS[1], 'status', 'granted', 'decided_by', ARGV[1],
             'expires_at', string.format('%.3f', expires))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'approved', 'granted', tostring(#approvals)}
end
return {'voted', st, tostring(#approvals)}
