-- The end of a reconcile run: the status it settled on, and the lease released.
-- KEYS[1]: the record. ARGV[1]: status.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
redis.call('HDEL', KEYS[1], 'reconciling')
return 1
