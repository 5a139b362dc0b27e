-- Change the status of a record that still exists (never resurrect an expired one).
-- KEYS[1]: the record. ARGV: status, decided_by ('' for none).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'decided_by', ARGV[2]) end
return 1
