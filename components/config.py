"""Run settings: the preset overrides every stage receives, checked once up front."""

from components import component


@component
def merged_overrides(benchmark: str, overrides: str) -> str:
    """The preset overrides as one JSON list: the user's, plus the benchmark when given."""
    from oaml.config import merged_overrides

    return merged_overrides(benchmark, overrides)
