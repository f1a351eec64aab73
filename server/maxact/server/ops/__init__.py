"""Operations: authentication, metrics, structured logs, interceptor plumbing."""
