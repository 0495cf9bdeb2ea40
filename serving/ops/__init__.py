"""Operations: admission control, the Redis circuit breaker, safe mode, metrics and JSON logs."""
