"""osreg: optical-SAR image registration."""

__version__ = "0.1.0"
