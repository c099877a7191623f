"""The container images the pipeline's steps run on, named from one registry prefix and one tag.

    refs = image_refs("ghcr.io/acme", "0.1.0")
    refs.light      # 'ghcr.io/acme/codedpo-light:0.1.0'   CPU stages and the launchers
    refs.sandbox    # 'ghcr.io/acme/codedpo-sandbox:0.1.0' the gVisor execution Job's pods
    refs.sampler    # 'ghcr.io/acme/codedpo-sampler:0.1.0' vLLM sampling (GPU)
    refs.trainer    # 'ghcr.io/acme/codedpo-trainer:0.1.0' the PyTorchJob's pods (GPU)
    refs = image_refs_from_env()   # CODEDPO_IMAGE_REGISTRY, CODEDPO_IMAGE_TAG

`images/build.sh --registry R [--tag T]` builds and pushes exactly these names
(`R/codedpo-<image>:T`, T defaulting to codedpo's version in both places), so compiling with the
registry and tag given to the build script gives pods images that exist. Each image is
`images/<name>/Dockerfile`.

The registry is required: a name without one cannot be pulled by a cluster. Bad values raise
`ImageConfigError` naming the setting (or its environment variable) and the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import metadata

from codedpo.components.common.errors import InputError

IMAGE_NAMES = ("sampler", "sandbox", "trainer", "light")
REGISTRY_ENV = "CODEDPO_IMAGE_REGISTRY"
TAG_ENV = "CODEDPO_IMAGE_TAG"

# The same rules as images/build.sh: a host[:port] with optional lower-case path components, no
# scheme and no tag; a Docker tag.
_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ImageConfigError(InputError):
    """A registry or tag that cannot name an image; the message names the setting and value."""


@dataclass(frozen=True)
class ImageRefs:
    """Full references (registry/name:tag) of codedpo's four images."""

    sampler: str
    sandbox: str
    trainer: str
    light: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def default_tag() -> str:
    """codedpo's installed version: the tag images/build.sh uses when given none."""
    return metadata.version("codedpo")


def image_refs(
    registry: str, tag: str | None = None, *, source: str = "registry", tag_source: str = "tag"
) -> ImageRefs:
    """The four image references under `registry` with `tag` (default: `default_tag()`).

    `source` / `tag_source` name where the values came from, for the error message (e.g. an env
    variable).
    """
    registry = registry.strip().rstrip("/")
    if not registry:
        raise ImageConfigError(f"{source} is empty: give the registry the images were pushed to, e.g. ghcr.io/acme")
    if not _REGISTRY.match(registry):
        raise ImageConfigError(
            f"{source}={registry!r} is not a registry host with an optional lower-case path "
            "(no scheme, no tag), e.g. ghcr.io/acme or localhost:5000/team"
        )
    tag = default_tag() if tag is None else tag.strip()
    if not _TAG.match(tag):
        raise ImageConfigError(
            f"{tag_source}={tag!r} is not a valid image tag: 1-128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    return ImageRefs(**{name: f"{registry}/codedpo-{name}:{tag}" for name in IMAGE_NAMES})


def image_refs_from_env(environ: Mapping[str, str] | None = None) -> ImageRefs:
    """`image_refs` from CODEDPO_IMAGE_REGISTRY (required) and CODEDPO_IMAGE_TAG (optional)."""
    env = os.environ if environ is None else environ
    registry = env.get(REGISTRY_ENV, "")
    if not registry.strip():
        raise ImageConfigError(f"{REGISTRY_ENV} is not set: give the registry the images were pushed to, e.g. ghcr.io/acme")
    tag = env.get(TAG_ENV) or None
    return image_refs(registry, tag, source=REGISTRY_ENV, tag_source=TAG_ENV)
