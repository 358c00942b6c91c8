-- An agent's state changes in one atomic step, with the free-agent indexes kept in line: an
-- agent is in the indexes exactly while available and registered (their softphone is up).
--
-- KEYS[1]: the agent's hash "ivr:acd:agent:<id>"
-- ARGV[1]: the new state ('' keeps the state: for a registration change)
-- ARGV[2]: the states it may change from, comma-separated ('*': any)
-- ARGV[3]: now, in milliseconds
-- ARGV[4]: the pause reason ('' for none)
-- ARGV[5]: the call the agent is on or offered ('' for none)
-- ARGV[6]: registered: '1', '0', or '' to keep
-- Returns {1, old state} when done, {0, old state} when the state did not allow it.

local key = KEYS[1]
local agent = string.sub(key, string.len('ivr:acd:agent:') + 1)
local old = redis.call('HGET', key, 'state')
if not old then
  return redis.error_reply('unknown agent ' .. agent)
end
local new = ARGV[1]
if new == '' then new = old end
if ARGV[2] ~= '*' and new ~= old then
  local allowed = false
  for from in string.gmatch(ARGV[2], '[^,]+') do
    if from == old then allowed = true end
  end
  if not allowed then return {0, old} end
end
-- A call is offered only to a registered softphone (a named agent too, not just the match).
if new == 'reserved' and new ~= old and redis.call('HGET', key, 'registered') ~= '1' then
  return {0, old}
end
local now = tonumber(ARGV[3])
if ARGV[6] ~= '' then redis.call('HSET', key, 'registered', ARGV[6]) end

for _, index in ipairs(redis.call('SMEMBERS', key .. ':indexes')) do
  redis.call('ZREM', index, agent)
end
redis.call('DEL', key .. ':indexes')
if new ~= old then
  redis.call('HSET', key, 'state', new, 'state_since_ms', now, 'pause_reason', ARGV[4],
             'call', ARGV[5])
  if new == 'available' then redis.call('HSET', key, 'idle_since_ms', now) end
end

-- Who is logged in for a skill (in any state but logged out): a caller of a skill nobody
-- staffs is told at once rather than left waiting.
local skills = cjson.decode(redis.call('HGET', key, 'skills') or '{}')
local languages = cjson.decode(redis.call('HGET', key, 'languages') or '[]')
for _, staffed in ipairs(redis.call('SMEMBERS', key .. ':staffed')) do
  redis.call('SREM', staffed, agent)
end
redis.call('DEL', key .. ':staffed')
if new ~= 'logged_out' then
  for _, language in ipairs(languages) do
    for topic, _ in pairs(skills) do
      local staffed = 'ivr:acd:staffed:' .. topic .. ':' .. language
      redis.call('SADD', staffed, agent)
      redis.call('SADD', key .. ':staffed', staffed)
    end
  end
end

if new == 'available' and redis.call('HGET', key, 'registered') == '1' then
  local idle = tonumber(redis.call('HGET', key, 'idle_since_ms') or now)
  for _, language in ipairs(languages) do
    for topic, proficiency in pairs(skills) do
      local index = 'ivr:acd:free:' .. topic .. ':' .. language
      redis.call('ZADD', index, (5 - tonumber(proficiency)) * 1e13 + idle, agent)
      redis.call('SADD', key .. ':indexes', index)
    end
    local any = 'ivr:acd:free:*:' .. language
    redis.call('ZADD', any, idle, agent)
    redis.call('SADD', key .. ':indexes', any)
  end
end
return {1, old}
