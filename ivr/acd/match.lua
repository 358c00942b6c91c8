-- One atomic step of automatic call distribution: the caller at the head of the best queue
-- gets the best free agent, or nothing happens. Redis runs a script alone, so no agent is ever
-- given two calls and no caller is taken twice, however many controllers call this at once.
--
-- KEYS: the queues to look at (sorted sets "ivr:acd:queue:<topic>:<language>", member = call
--       id, score = rank: priority first, then time of entry).
-- ARGV[1]: now, in milliseconds
-- ARGV[2]: seconds of waiting after which the search widens to any proficiency in the topic
-- ARGV[3]: seconds after which it widens to any agent who speaks the caller's language
-- ARGV[4]: the proficiency a caller gets before the first widening (1-5)
--
-- Free agents are indexed per skill in "ivr:acd:free:<topic>:<language>" (score: best first:
-- higher proficiency, then longest idle) and per language in "ivr:acd:free:*:<language>".
-- Returns {call id, agent id, queue key, level} or nil.

local now = tonumber(ARGV[1])
local widen_any_proficiency = tonumber(ARGV[2]) * 1000
local widen_any_agent = tonumber(ARGV[3]) * 1000
local min_proficiency = tonumber(ARGV[4])
local PROFICIENCY_STEP = 1e13  -- the free-agent score is (5 - proficiency) * 1e13 + idle since

-- The queues by the rank of their head caller: the most urgent caller is served first.
local heads = {}
for _, queue in ipairs(KEYS) do
  local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
  if head[1] then
    table.insert(heads, {queue = queue, call = head[1], rank = tonumber(head[2])})
  end
end
table.sort(heads, function(a, b) return a.rank < b.rank end)

for _, head in ipairs(heads) do
  local call_key = 'ivr:acd:call:' .. head.call
  local entered = tonumber(redis.call('HGET', call_key, 'entered_ms') or now)
  local topic = redis.call('HGET', call_key, 'topic')
  local language = redis.call('HGET', call_key, 'language')
  local waited = now - entered
  local candidates = {}
  local skill_index = 'ivr:acd:free:' .. topic .. ':' .. language
  local level = 0
  if waited >= widen_any_agent then
    level = 2
    candidates = redis.call('ZRANGE', skill_index, 0, 0)
    if not candidates[1] then
      candidates = redis.call('ZRANGE', 'ivr:acd:free:*:' .. language, 0, 0)
    end
  elseif waited >= widen_any_proficiency then
    level = 1
    candidates = redis.call('ZRANGE', skill_index, 0, 0)
  else
    local best_allowed = (5 - min_proficiency + 1) * PROFICIENCY_STEP
    candidates = redis.call('ZRANGEBYSCORE', skill_index, '-inf', '(' .. best_allowed,
                            'LIMIT', 0, 1)
  end
  local agent = candidates[1]
  if agent then
    local agent_key = 'ivr:acd:agent:' .. agent
    -- Out of every free index at once: the agent is reserved for this call.
    for _, index in ipairs(redis.call('SMEMBERS', agent_key .. ':indexes')) do
      redis.call('ZREM', index, agent)
    end
    redis.call('HSET', agent_key, 'state', 'reserved', 'call', head.call,
               'state_since_ms', now)
    redis.call('ZREM', head.queue, head.call)
    redis.call('HSET', call_key, 'agent', agent, 'state', 'offered', 'offered_ms', now)
    return {head.call, agent, head.queue, level}
  end
end
return nil
