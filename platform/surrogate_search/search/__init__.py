"""Ray-distributed search: Ray Train post-tuning, Ray Tune + Optuna over YAML search spaces.

``space`` imports no Ray, so a bad space fails before Ray starts; ``train`` and ``tune`` do.
"""

from surrogate_search.search.space import SearchSpec, SpaceError, load_space

__all__ = ["SearchSpec", "SpaceError", "load_space"]
