-- Take a transaction whose outcome is unknown for one reconcile run.
-- KEYS[1]: the record. ARGV: sub, now, lease seconds, most runs allowed.
-- Only its subject may; one run at a time (a lease, so a worker that died frees it);
-- at most ARGV[4] runs. Returns {'ok', run number, record pairs} or {refusal, status}.
local f = redis.call('HMGET', KEYS[1], 'status', 'sub', 'reconciles', 'reconciling')
if not f[1] then return {'missing', ''} end
if f[2] ~= ARGV[1] then return {'mismatch', ''} end
if f[1] ~= 'outcome_unknown' then return {'status', f[1]} end
if f[4] and tonumber(f[4]) > tonumber(ARGV[2]) then return {'busy', f[1]} end
local n = tonumber(f[3] or '0') + 1
if n > tonumber(ARGV[4]) then return {'exhausted', f[1]} end
redis.call('HSET', KEYS[1], 'reconciles', n, 'reconciling', tonumber(ARGV[2]) + tonumber(ARGV[3]))
return {'ok', n, redis.call('HGETALL', KEYS[1])}
