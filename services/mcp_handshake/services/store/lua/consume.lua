-- Use a token up: check its binding, status, the policy in force and the proof, and mark
-- it executed, in one step.
-- KEYS[1]: the record; KEYS[2] (with a proof): its jti's marker, in the same slot.
-- ARGV: sub, tool, txn, ph, retention ms, now, proof ('1' when a valid proof came with
-- the request), thumbprint of the proof's key; then what the policy in force at execute
-- says: allowed, proof required, approval required ('1'/'0'); then the jti marker's ttl
-- ms. A proof's jti is claimed on any use of a matching record: a replay is refused
-- (and burns a live token) without the token ever being consumed.
-- A mismatching or refused attempt burns a live token. A session bound to a key at
-- authorize (jkt) can only be executed with a proof by that key.
-- Returns {outcome} or {'ok', <the record as field/value pairs>}.
local f = redis.call('HMGET', KEYS[1], 'status', 'sub', 'tool', 'txn', 'ph', 'decided_by', 'jkt')
local status = f[1]
if not status then return {'missing'} end
local function burn()
  redis.call('HSET', KEYS[1], 'status', 'burnt')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local live = status == 'granted' or status == 'pending_approval'
if f[2] ~= ARGV[1] or f[3] ~= ARGV[2] or f[4] ~= ARGV[3] or f[5] ~= ARGV[4] then
  if live then burn() end
  return {'mismatch'}
end
if KEYS[2] and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[12]) then
  if live then burn() end
  return {'replay'}
end
if live and ARGV[9] ~= '1' then burn() return {'forbidden'} end
if status == 'pending_approval' then return {'pending'} end
if status == 'denied' then return {'denied'} end
if status ~= 'granted' then return {'used'} end
if ARGV[10] == '1' and ARGV[7] ~= '1' then burn() return {'no_proof'} end
if f[7] and f[7] ~= '' and ARGV[7] == '1' and f[7] ~= ARGV[8] then burn() return {'wrong_key'} end
-- Approved: a granted record that someone (or the confirmation agent) decided.
if ARGV[11] == '1' and not (f[6] and f[6] ~= '') then burn() return {'needs_approval'} end
redis.call('HSET', KEYS[1], 'status', 'executed', 'executed_at', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'ok', redis.call('HGETALL', KEYS[1])}
