"""The send pipeline: Scheduler -> RateLimiter -> SenderPool -> PostProcessor, bounded pipes."""
