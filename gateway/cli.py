"""Technician CLI (placeholder while the foundation is assembled)."""


def main() -> None:
    raise SystemExit(0)
