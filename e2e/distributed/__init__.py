"""``make e2e-distributed``: the provider under PostgreSQL, Redis, Celery workers and two triggerers."""
