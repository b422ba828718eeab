"""AWS endpoint names per region, and the defaults for time and support.

The names come from ``endpoints.toml`` beside this module: templates per
endpoint group, filled in with a region and its partition's DNS suffix.
A region that is not in the file is an error, so a typo such as
``us-east1`` is caught before any probe runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rules.matrix import MatrixError, read_toml

# S3 bucket naming rules: 3 to 63 lower-case letters, digits, dots and
# hyphens, starting and ending with a letter or digit.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class RegionError(ValueError):
    """A region name that does not exist."""


class BucketError(ValueError):
    """A bucket name that S3 would not accept."""


@dataclass(frozen=True)
class Endpoints:
    """Endpoint templates, regions and defaults, as loaded."""

    groups: dict[str, tuple[str, ...]]
    activation: str
    suffixes: dict[str, str]
    support_hosts: tuple[str, ...]
    ntp_servers: tuple[str, ...]

    def check_region(self, region: str) -> None:
        if region not in self.suffixes:
            raise RegionError(
                f"unknown region {region!r}; known regions: "
                + ", ".join(sorted(self.suffixes))
            )

    def names(
        self, group: str, region: str, buckets: tuple[str, ...] = ()
    ) -> list[str]:
        """The host names of one endpoint group in a region."""
        self.check_region(region)
        fill = {"region": region, "suffix": self.suffixes[region]}
        names: list[str] = []
        for template in self.groups.get(group, ()):
            if "{bucket}" in template:
                names.extend(template.format(bucket=b, **fill) for b in buckets)
            else:
                names.append(template.format(**fill))
        return names

    def activation_host(self, region: str) -> str:
        self.check_region(region)
        return self.activation.format(region=region, suffix=self.suffixes[region])


def check_bucket(name: str) -> None:
    if not _BUCKET.match(name) or ".." in name:
        raise BucketError(
            f"bucket name {name!r} is not valid: 3 to 63 lower-case letters, "
            "digits, dots and hyphens"
        )


def default_endpoints_path() -> Path:
    return Path(str(resources.files("rules").joinpath("endpoints.toml")))


def load_endpoints(path: Path | None = None) -> Endpoints:
    """Read the endpoints file, or raise :class:`MatrixError`."""
    where = path or default_endpoints_path()
    document = read_toml(where)
    try:
        return _build(document)
    except (KeyError, TypeError, AttributeError) as exc:
        raise MatrixError(f"{where}: malformed endpoints file: {exc}") from exc


def _build(document: dict[str, Any]) -> Endpoints:
    groups = {
        name: tuple(str(t) for t in templates)
        for name, templates in document["groups"].items()
        if isinstance(templates, list)
    }
    suffixes: dict[str, str] = {}
    for partition in document["partitions"].values():
        for region in partition["regions"]:
            suffixes[str(region)] = str(partition["suffix"])
    defaults = document["defaults"]
    return Endpoints(
        groups=groups,
        activation=str(document["groups"]["activation"]),
        suffixes=suffixes,
        support_hosts=tuple(defaults["support_hosts"]),
        ntp_servers=tuple(defaults["ntp_servers"]),
    )
