"""The benchmark commands: their parts, and what they measure kept in check."""
