"""The resource monitor: CPU, memory, battery, thermal and network snapshots."""
