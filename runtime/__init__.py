"""The device side of Tandem: config, monitor, confidence, policy, privacy, offload, API, CLI."""
