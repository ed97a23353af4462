"""The cloud gateway: sealed-envelope protocol, device auth, replay protection, rate limits,
upstream.

Public surface:
- `cloud_gateway.protocol`: the wire protocol (the only part the device imports).
- `cloud_gateway.errors`: `GatewayError` and its subclasses, each with a status and wire code.
- `cloud_gateway.config.GatewayConfig` / `load_gateway_config`.
- `cloud_gateway.app.create_app(config, *, engine=None, upstream=None)`: the aiohttp app.
- `cloud_gateway.cli.main(argv)`: `tandem gateway keygen|keys|retire|enroll|revoke|serve`.

This module imports nothing heavy, so the device can import the protocol cheaply.
"""
