"""Name patterns of the file format, without pydantic (the loader and resolver use them on
every run; the models in model.py import them from here)."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
IFNAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
MAC_PATTERN = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
