"""The newsletter rate limit: a token bucket in Redis shared by every worker.

Applied where requests are made (just before each provider request), not when jobs
are enqueued: queued jobs cost nothing, and several workers draw from one bucket.
It is a GCRA ("generic cell rate algorithm") bucket: one key holds the theoretical
arrival time; taking n emails moves it n * 60/rate seconds on. Up to one full batch
may go at once (the burst). A provider 429 pauses every sender until its reset time.

The script reads the time from Redis, so workers on machines with skewed clocks agree.
"""

from __future__ import annotations

from crm.newsletters.settings import batch_size, setting

BUCKET_KEY = "klynge:newsletters:bucket"
PAUSE_KEY = "klynge:newsletters:pause-until"

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then return tostring(pause - now) end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1])
local allow_at = new_tat - tonumber(ARGV[2])
if allow_at > now then return tostring(allow_at - now) end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""

_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return tostring(until_)
"""


class RateLimiter:
    """`acquire(n)` takes n emails' worth of capacity now (0.0) or says how long to wait."""

    def __init__(self, connection, per_minute: int | None = None, burst: int | None = None):
        self.connection = connection
        self.per_minute = max(1, int(per_minute or setting("NEWSLETTER_RATE_PER_MINUTE")))
        self.burst = max(1, int(burst or batch_size()))
        self._acquire = connection.register_script(_ACQUIRE)
        self._pause = connection.register_script(_PAUSE)

    def cost(self, emails: int) -> float:
        return emails * 60.0 / self.per_minute

    def acquire(self, emails: int) -> float:
        """0.0 when `emails` may go now (and they are taken); else seconds to wait.

        Nothing is taken when the answer is a wait: the caller asks again after it.
        """
        emails = max(1, min(emails, self.burst))
        wait = self._acquire(
            keys=[BUCKET_KEY, PAUSE_KEY],
            args=[repr(self.cost(emails)), repr(self.cost(self.burst))],
        )
        return max(0.0, float(wait))

    def pause_all(self, seconds: float) -> None:
        """Every sender waits `seconds` (the provider said 429 with this reset time)."""
        self._pause(keys=[PAUSE_KEY], args=[repr(max(0.0, seconds))])
