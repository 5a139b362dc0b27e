-- A dispatch whose outcome is unknown: mark it so, and keep the params that were
-- dispatched (restricted records hold them already), so the caller can reconcile it.
-- KEYS[1]: the record. ARGV[1]: the dispatched params as JSON.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'outcome_unknown')
if redis.call('HEXISTS', KEYS[1], 'params') == 0 then
  redis.call('HSET', KEYS[1], 'params', ARGV[1])
end
return 1
