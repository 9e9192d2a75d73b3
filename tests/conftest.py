"""Session set-up shared by every test: 8 fake CPU devices for the sharding tests.

XLA reads the flag when JAX first initialises its backends, so it is set here,
before any test module imports jax. Single-device code runs on device 0 as usual.
"""
import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
