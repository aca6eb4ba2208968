"""netcompose: a declarative topology reconciler for Linux container networking."""

__all__ = ["Project"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The engine (netlink, OVS, pydantic) loads on first use: `netcompose --version` needs none of it.
    if name == "Project":
        from .engine import Project
        return Project
    raise AttributeError(f"module 'netcompose' has no attribute {name!r}")
