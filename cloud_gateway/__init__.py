"""The cloud gateway: sealed-envelope protocol, device auth, replay protection, rate limits, upstream."""
