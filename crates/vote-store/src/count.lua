-- Counts a batch of events exactly once per Kafka offset (and once per idempotency key), in one
-- atomic step. Phase 1 checks every key, field and score it will touch and decides, writing
-- nothing; phase 2 writes. An error reply means nothing of the batch was written.
--
-- KEYS: 1 applied (hash: partition field -> last offset handled), 2 applied ids (hash: partition
-- field -> fingerprint of the record at that offset), 3 epoch (string: counting started in this
-- Redis), 4 recounting (string: a recount is rebuilding the counters); then per aggregate j:
-- KEYS[3 + 2j] the aggregate and KEYS[4 + 2j] its overflow counter; then the idempotency markers.
-- ARGV: 1 marker ttl (s), 2 mode ('consumer' or 'recount'), 3 partitions P, 4 aggregates A;
-- A x (kind: 'rank' | 'add' | 'list', cap); P x (field, first offset, floor, verified offset,
-- last offset, last fingerprint); then every event: partition index, offset, marker index (0:
-- none), op count N, and N x (aggregate j, member, amount).
-- Replies {counted event indexes, overflowed ops}, or an error: RECOUNT, STORE <what>,
-- GAP <p:applied ...>, REPLAY <p:applied:fingerprint ...>, EVENT <index> <what>.

local ttl = tonumber(ARGV[1])
local mode = ARGV[2]
local nparts = tonumber(ARGV[3])
local naggs = tonumber(ARGV[4])

local function fail(code, text)
  return redis.error_reply(code .. ' ' .. text)
end

-- A count Redis can increment and a double holds exactly (no '1.0', '1e3', '+5', 'inf').
local function integer_text(value)
  return string.match(value, '^%-?%d+$') ~= nil and #value <= 16
end

local function wrong_type(key, expected)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= expected then
    return 'key ' .. key .. ' holds a ' .. found .. ', expected a ' .. expected
  end
  return nil
end

local function not_integer(key)
  local value = redis.call('GET', key)
  if value and not integer_text(value) then
    return 'key ' .. key .. ' does not hold an integer'
  end
  return nil
end

if mode ~= 'recount' and redis.call('EXISTS', KEYS[4]) == 1 then
  return fail('RECOUNT', 'a recount is rebuilding the counters')
end
local problem = wrong_type(KEYS[1], 'hash') or wrong_type(KEYS[2], 'hash') or wrong_type(KEYS[3], 'string')
if problem then return fail('STORE', problem) end

local at = 4
local kinds, caps = {}, {}
local type_of = { rank = 'zset', add = 'string', list = 'list' }
for j = 1, naggs do
  kinds[j], caps[j] = ARGV[at + 1], tonumber(ARGV[at + 2])
  at = at + 2
  local key, overflow = KEYS[3 + 2 * j], KEYS[4 + 2 * j]
  problem = wrong_type(key, type_of[kinds[j]]) or wrong_type(overflow, 'string') or not_integer(overflow)
  if not problem and kinds[j] == 'add' then problem = not_integer(key) end
  if problem then return fail('STORE', problem) end
end

-- Partitions: a batch must start right after what was applied (GAP otherwise: Redis lost
-- writes), and one that starts at or before it is a redelivery the caller must have verified
-- against the log (REPLAY otherwise: the topic may have been recreated).
local epoch = redis.call('EXISTS', KEYS[3]) == 1
local fields, applied, original, last, last_id = {}, {}, {}, {}, {}
local gaps, replays = {}, {}
for p = 1, nparts do
  local field, first, floor, verified = ARGV[at + 1], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  fields[p], last[p], last_id[p] = field, tonumber(ARGV[at + 5]), ARGV[at + 6]
  at = at + 6
  local stored = redis.call('HGET', KEYS[1], field)
  if stored and not integer_text(stored) then
    return fail('STORE', 'field ' .. field .. ' of ' .. KEYS[1] .. ' is not an offset')
  end
  local a = tonumber(stored or '-1')
  applied[p], original[p] = a, a
  if mode ~= 'recount' then
    if stored then
      if first > a + 1 and first > floor then
        gaps[#gaps + 1] = p .. ':' .. a
      elseif first <= a and verified ~= a then
        replays[#replays + 1] = p .. ':' .. a .. ':' .. (redis.call('HGET', KEYS[2], field) or '-')
      end
    elseif not epoch and first > 0 and first > floor then
      gaps[#gaps + 1] = p .. ':-1'
    end
  end
end
if #gaps > 0 then return fail('GAP', table.concat(gaps, ' ')) end
if #replays > 0 then return fail('REPLAY', table.concat(replays, ' ')) end

-- Events: decide which count, and check the scores they would increment.
local markers_at = 4 + 2 * naggs
local marked, known, apply = {}, {}, {}
for j = 1, naggs do known[j] = {} end
local index = 0
while at < #ARGV do
  index = index + 1
  local p, offset, marker, nops = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local ops_at = at + 4
  at = ops_at + 3 * nops
  if offset > applied[p] then
    applied[p] = offset
    local fresh = true
    if marker > 0 then
      local key = KEYS[markers_at + marker]
      if marked[key] or redis.call('EXISTS', key) == 1 then
        fresh = false
      else
        marked[key] = true
      end
    end
    if fresh then
      for o = 0, nops - 1 do
        local j, member = tonumber(ARGV[ops_at + 1 + 3 * o]), ARGV[ops_at + 2 + 3 * o]
        if kinds[j] == 'rank' and known[j][member] == nil then
          local score = redis.call('ZSCORE', KEYS[3 + 2 * j], member)
          if score and not integer_text(score) then
            return fail('EVENT', index .. ' member ' .. member .. ' of ' .. KEYS[3 + 2 * j] .. ' is not a count')
          end
          known[j][member] = score ~= false
        end
      end
      apply[#apply + 1] = { index, ops_at, nops, marker }
    end
  end
end

-- Writes.
local cards, overflowed, counted = {}, 0, {}
for _, item in ipairs(apply) do
  local ops_at, nops, marker = item[2], item[3], item[4]
  for o = 0, nops - 1 do
    local j, member, amount = tonumber(ARGV[ops_at + 1 + 3 * o]), ARGV[ops_at + 2 + 3 * o], ARGV[ops_at + 3 + 3 * o]
    local key = KEYS[3 + 2 * j]
    if kinds[j] == 'rank' then
      if not known[j][member] then
        cards[j] = cards[j] or redis.call('ZCARD', key)
        if cards[j] < caps[j] then
          cards[j] = cards[j] + 1
          known[j][member] = true
        end
      end
      if known[j][member] then
        redis.call('ZINCRBY', key, amount, member)
      else
        redis.call('INCRBY', KEYS[4 + 2 * j], amount)
        overflowed = overflowed + 1
      end
    elseif kinds[j] == 'add' then
      redis.call('INCRBY', key, amount)
    else
      redis.call('LPUSH', key, member)
    end
  end
  if marker > 0 then
    redis.call('SET', KEYS[markers_at + marker], '1', 'EX', ttl)
  end
  counted[#counted + 1] = item[1]
end
if #apply > 0 then
  for j = 1, naggs do
    if kinds[j] == 'list' then redis.call('LTRIM', KEYS[3 + 2 * j], 0, caps[j] - 1) end
  end
end
for p = 1, nparts do
  if last[p] > original[p] then
    redis.call('HSET', KEYS[1], fields[p], last[p])
    redis.call('HSET', KEYS[2], fields[p], last_id[p])
  end
end
if not epoch then redis.call('SET', KEYS[3], '1') end
return { counted, overflowed }
