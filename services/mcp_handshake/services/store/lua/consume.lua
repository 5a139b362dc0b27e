-- Use a token up: check its binding, status and proof, and mark it executed, in one step.
-- KEYS[1]: the record. ARGV: sub, tool, txn, ph, retention ms, now, proof ('1' when a
-- valid proof came with the request), thumbprint of the proof's key.
-- A mismatching attempt burns a live token. A session bound to a key at authorize (jkt)
-- can only be executed with a proof by that key.
-- Returns {outcome} or {'ok', <the record as field/value pairs>}.
local f = redis.call('HMGET', KEYS[1], 'status', 'sub', 'tool', 'txn', 'ph', 'tier', 'jkt')
local status = f[1]
if not status then return {'missing'} end
local function burn()
  redis.call('HSET', KEYS[1], 'status', 'burnt')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if f[2] ~= ARGV[1] or f[3] ~= ARGV[2] or f[4] ~= ARGV[3] or f[5] ~= ARGV[4] then
  if status == 'granted' or status == 'pending_approval' then burn() end
  return {'mismatch'}
end
if status == 'pending_approval' then return {'pending'} end
if status == 'denied' then return {'denied'} end
if status ~= 'granted' then return {'used'} end
if f[6] ~= 'public' and ARGV[7] ~= '1' then burn() return {'no_proof'} end
if f[7] and f[7] ~= '' and ARGV[7] == '1' and f[7] ~= ARGV[8] then burn() return {'wrong_key'} end
redis.call('HSET', KEYS[1], 'status', 'executed', 'executed_at', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'ok', redis.call('HGETALL', KEYS[1])}
