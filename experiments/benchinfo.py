"""Machine and package facts every benchmark records next to its figures (imported by the bench scripts)."""
from __future__ import annotations

import os
import platform
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, version


def machine() -> dict:
    """CPU model, core count, Python and kernel versions, and the load average right now."""
    name = platform.processor() or ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"cpu": name, "cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
            "loadavg_before": os.getloadavg()}


def quick_out(name: str) -> str:
    """Where a --quick smoke run writes when no --out is given: the temp dir, never experiments/results/."""
    return os.path.join(tempfile.gettempdir(), name)


def versions(packages) -> dict:
    """Installed version of each package (None when it is not installed)."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
