#!/usr/bin/env bash
# Builds (and with --push, pushes) codedpo's container images:
#
#   images/build.sh --registry REGISTRY [--tag TAG] [--push] [--platform P] [--dry-run]
#                   [--base IMAGE] [--ca-bundle FILE] [--torch-wheel FILE] [--network NAME] [IMAGE...]
#
#   REGISTRY   where the images go, e.g. ghcr.io/acme or europe-docker.pkg.dev/proj/repo
#              (default: $CODEDPO_IMAGE_REGISTRY)
#   TAG        default: $CODEDPO_IMAGE_TAG, else codedpo's version in pyproject.toml
#   IMAGE      any of: sampler sandbox trainer light (default: all four)
#   --platform default linux/amd64 (the CUDA bases exist for amd64; build there for GPU nodes)
#   --base     every Dockerfile's BASE_IMAGE (default: each one's pinned public base), e.g.
#              codedpo-base:bookworm made from Debian's packages by images/base/build.sh
#   --ca-bundle  a CA bundle the build stage trusts for pip (a TLS-intercepting proxy); the
#              final images do not contain it
#   --torch-wheel  a torch wheel for the trainer on a base without torch (a CPU trainer image)
#   --network  the build's network (e.g. host, where no Docker bridge exists)
#   --dry-run  print the commands only (no docker needed)
#
# Image names are REGISTRY/codedpo-IMAGE:TAG, the names `codedpo.pipelines.images` gives the
# pipeline (same registry and tag there: CODEDPO_IMAGE_REGISTRY / CODEDPO_IMAGE_TAG).
# Uses `docker buildx build` when buildx is available, else `docker build` (+ `docker push`).
# The build context is the repository root (see .dockerignore). Every command is printed first.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_IMAGES=(sampler sandbox trainer light)

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "images/build.sh: $*" >&2; exit 2; }

registry="${CODEDPO_IMAGE_REGISTRY:-}"
tag="${CODEDPO_IMAGE_TAG:-}"
push=0
dry_run=0
platform="linux/amd64"
base=""
ca_bundle=""
torch_wheel=""
network=""
images=()
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) [ $# -ge 2 ] || die "--registry needs a value"; registry="$2"; shift 2 ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag="$2"; shift 2 ;;
    --platform) [ $# -ge 2 ] || die "--platform needs a value"; platform="$2"; shift 2 ;;
    --base) [ $# -ge 2 ] || die "--base needs a value"; base="$2"; shift 2 ;;
    --ca-bundle) [ $# -ge 2 ] || die "--ca-bundle needs a value"; ca_bundle="$2"; shift 2 ;;
    --torch-wheel) [ $# -ge 2 ] || die "--torch-wheel needs a value"; torch_wheel="$2"; shift 2 ;;
    --network) [ $# -ge 2 ] || die "--network needs a value"; network="$2"; shift 2 ;;
    --push) push=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) images+=("$1"); shift ;;
  esac
done

[ -n "$registry" ] || die "--registry is required (or set CODEDPO_IMAGE_REGISTRY), e.g. --registry ghcr.io/acme"
registry="${registry%/}"
[[ "$registry" =~ ^[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$ ]] \
  || die "--registry '$registry' is not a registry host with optional lower-case path (no scheme, no tag)"
if [ -z "$tag" ]; then
  tag="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
  [ -n "$tag" ] || die "cannot read the version from pyproject.toml; give --tag"
fi
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "--tag '$tag' is not a valid image tag"
[ ${#images[@]} -gt 0 ] || images=("${ALL_IMAGES[@]}")
for image in "${images[@]}"; do
  [ -f "images/$image/Dockerfile" ] || die "unknown image '$image' (known: ${ALL_IMAGES[*]})"
done

[ -z "$ca_bundle" ] || [ -s "$ca_bundle" ] || die "--ca-bundle $ca_bundle: no such (non-empty) file"
[ -z "$torch_wheel" ] || [[ -f "$torch_wheel" && "$torch_wheel" == *.whl ]] || die "--torch-wheel $torch_wheel: not a .whl file"

run() {
  echo "+ $*"
  if [ "$dry_run" -eq 0 ]; then "$@"; fi
}

build_args=()
[ -z "$base" ] || build_args+=(--build-arg "BASE_IMAGE=$base")
[ -z "$network" ] || build_args+=(--network "$network")

buildx=0
if [ "$dry_run" -eq 0 ]; then
  command -v docker >/dev/null 2>&1 \
    || die "docker is not installed (or not on PATH); install Docker with buildx, or use --dry-run to see the commands"
  docker buildx version >/dev/null 2>&1 && buildx=1
else
  buildx=1
fi

# What one build borrows (the CA bundle, a torch wheel) lies in the build context only while it
# runs; the build stage reads it, the final image never copies it.
cleanup() { rm -f images/ca/ca.crt images/wheels/*.whl; }
if [ "$dry_run" -eq 0 ]; then
  trap cleanup EXIT
  [ -z "$ca_bundle" ] || cp "$ca_bundle" images/ca/ca.crt
  [ -z "$torch_wheel" ] || cp "$torch_wheel" images/wheels/
fi

for image in "${images[@]}"; do
  ref="$registry/codedpo-$image:$tag"
  if [ "$buildx" -eq 1 ]; then
    output="--load"; [ "$push" -eq 1 ] && output="--push"
    run docker buildx build --platform "$platform" ${build_args[@]+"${build_args[@]}"} -f "images/$image/Dockerfile" \
      -t "$ref" "$output" .
  else
    # The classic builder (no buildx: Debian's docker.io): --platform needs BuildKit there, so it
    # is left out; the image is built for the engine's own platform.
    run env DOCKER_BUILDKIT=0 docker build ${build_args[@]+"${build_args[@]}"} -f "images/$image/Dockerfile" -t "$ref" .
    [ "$push" -eq 1 ] && run docker push "$ref"
  fi
  if [ "$dry_run" -eq 1 ]; then echo "would build $ref"; else echo "built $ref"; fi
done
