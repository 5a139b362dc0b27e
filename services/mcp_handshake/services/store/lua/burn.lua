-- Mark a live token burnt (e.g. after a refused proof), whatever its binding.
-- KEYS[1]: the record. ARGV[1]: retention ms.
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'granted' or status == 'pending_approval' then
  redis.call('HSET', KEYS[1], 'status', 'burnt')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
