"""The port matrix and the AWS endpoint names, as data and their loaders."""

from rules.endpoints import (
    BucketError,
    Endpoints,
    RegionError,
    check_bucket,
    load_endpoints,
)
from rules.matrix import (
    GATEWAY_TYPES,
    Direction,
    Matrix,
    MatrixError,
    Rule,
    load_matrix,
)

__all__ = [
    "GATEWAY_TYPES",
    "BucketError",
    "Direction",
    "Endpoints",
    "Matrix",
    "MatrixError",
    "RegionError",
    "Rule",
    "check_bucket",
    "load_endpoints",
    "load_matrix",
]
