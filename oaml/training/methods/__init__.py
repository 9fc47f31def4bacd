"""Training methods as loss modules: each returns a dict of named terms with the total as 'loss'.

The engine and the stages never special-case a method; a new method is one class and one
decorator (`@METHODS.register(name)` on a `Method` subclass), in its own module here or anywhere
imported before training.
"""

from oaml.training.methods import ce, oaml, oe_energy  # noqa: F401  (they register themselves)
from oaml.training.methods.base import (
    METHODS,
    STUDENT,
    TEACHER,
    Method,
    PrepareContext,
    create_method,
    method_names,
)

__all__ = [
    "METHODS",
    "STUDENT",
    "TEACHER",
    "Method",
    "PrepareContext",
    "create_method",
    "method_names",
]
