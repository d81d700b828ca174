"""The benchmark commands' own parts, and what `bench footprint` measures kept in check."""
