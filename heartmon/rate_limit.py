"""A token bucket per connection, for servers that anyone on the machine can reach (the
hub, the Inngest Connect gateway): one noisy client is slowed to a rate far above
what a worker needs, so it cannot delay other workers' beats into false alarms."""

from __future__ import annotations


class RateLimit:
    """A token bucket per connection: ``rate`` frames a second on average, bursts of
    ``burst``. Far above what a worker sends (one frame per beat, plus probe events)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, now

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
