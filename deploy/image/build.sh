#!/usr/bin/env bash
# Builds the tenantmigrate binary (static, CGO off) and the container image
# FROM scratch, with podman when present, else docker. No base image is
# pulled, so no registry is needed. Prints the image tag on stdout.
#
#   deploy/image/build.sh [TAG]     # default tag: tenantmigrate:<git describe>
#
# Environment: CONTAINER_TOOL (podman or docker) forces the tool; CA_BUNDLE
# is the CA certificate file to copy (default /etc/ssl/certs/ca-certificates.crt).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)"
tag="${1:-tenantmigrate:${version}}"

tool="${CONTAINER_TOOL:-}"
if [ -z "$tool" ]; then
	if command -v podman >/dev/null 2>&1; then
		tool=podman
	elif command -v docker >/dev/null 2>&1; then
		tool=docker
	else
		echo "build.sh: neither podman nor docker is installed" >&2
		exit 1
	fi
fi
ca="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
if [ ! -r "$ca" ]; then
	echo "build.sh: no CA bundle at $ca (install ca-certificates, or set CA_BUNDLE)" >&2
	exit 1
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
(cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${version}" \
	-o "$ctx/tenantmigrate" ./cmd/tenantmigrate) >&2
cp "$ca" "$ctx/ca-certificates.crt"
printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$ctx/passwd"
printf 'nonroot:x:65532:\n' >"$ctx/group"
cp "$root/deploy/image/Containerfile" "$ctx/Containerfile"

"$tool" build -q -f "$ctx/Containerfile" -t "$tag" "$ctx" >&2
echo "$tag"
