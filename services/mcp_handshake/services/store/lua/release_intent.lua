-- An attempt that took a token's execute intent key (published while the token was being
-- consumed) will never dispatch: note the intent's stream sequence in the record, so the
-- attempt that consumed the token may record an intent of its own and run.
-- KEYS[1]: the record. ARGV[1]: the sequence. Never creates a record.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'intent_released', ARGV[1])
return 1
