-- Store a new transaction record.
-- KEYS[1]: the record. ARGV[1]: ttl ms; then field/value pairs.
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
