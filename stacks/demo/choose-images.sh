#!/usr/bin/env bash
# Decides where the demo's images come from, for `just up`:
#
#   public    the images stacks/demo/devstack.yaml names, pulled by devstack
#             (with progress) from their registry: when the engine already
#             has every one of them, or when that registry answers. Docker
#             Desktop on macOS and Windows, and most Linux machines.
#   replicas  the local replicas of those images (stacks/demo/replicas.yaml
#             on top), built from Debian packages by fixtures/images/build.sh
#             (Linux, root, debootstrap): when no registry answers, as on the
#             machines this project is built and tested on.
#
# Prints the stack files to pass with -f (absolute), one per line, on
# stdout; says which source it chose and why on stderr.
#
# Usage: stacks/demo/choose-images.sh [--no-build]
#   --no-build   decide and print only: do not build the replicas
# Environment:
#   DEVSTACK_DEMO_IMAGES    `public` or `replicas`: skip the decision
#   DEVSTACK_DEMO_REGISTRY  the registry to ask (default: Docker Hub's,
#                           https://registry-1.docker.io, where every image
#                           of the demo comes from); when set, its answer
#                           alone decides (the images already here do not)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STACK=stacks/demo/devstack.yaml
OVERLAY=stacks/demo/replicas.yaml
REGISTRY=${DEVSTACK_DEMO_REGISTRY:-https://registry-1.docker.io}
BUILD=1
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        -h|--help)  sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *)          echo "demo: error: unknown option: $arg" >&2; exit 2 ;;
    esac
done

say() { printf 'demo: %s\n' "$*" >&2; }

public() {
    say "public images ($1): devstack pulls what is missing, once"
    echo "$REPO/$STACK"
}

replicas() {
    if (( BUILD )); then
        say "local replicas ($1): building them with fixtures/images/build.sh (Linux, as root, with debootstrap)"
        # Only the replicas the overlay names (and their base).
        local names
        names=$(sed -n 's|.*image: devstack-fixtures/\([^ #]*\).*|\1|p' "$REPO/$OVERLAY" | sort -u)
        # shellcheck disable=SC2086 # one word per image name
        bash "$REPO/fixtures/images/build.sh" $names >&2 \
            || { say "the replicas could not be built; on macOS or Windows, let Docker Desktop reach Docker Hub instead"; exit 1; }
    else
        say "local replicas ($1)"
    fi
    printf '%s\n%s\n' "$REPO/$STACK" "$REPO/$OVERLAY"
}

case ${DEVSTACK_DEMO_IMAGES:-} in
    public)   public "DEVSTACK_DEMO_IMAGES=public"; exit 0 ;;
    replicas) replicas "DEVSTACK_DEMO_IMAGES=replicas"; exit 0 ;;
    "")       ;;
    *)        say "error: DEVSTACK_DEMO_IMAGES is \`public\` or \`replicas\`, not \`$DEVSTACK_DEMO_IMAGES\`"; exit 2 ;;
esac

# The images the stack names, and the one its build starts FROM.
images=$(
    sed -n 's/^ *image: *\([^ #]*\).*/\1/p' "$REPO/$STACK"
    sed -n 's/^ARG PYTHON=\(.*\)$/\1/p' "$REPO/stacks/demo/app/Dockerfile"
)
images=$(printf '%s\n' "$images" | grep -v '^demo/' | sort -u)
missing=0
for image in $images; do
    docker image inspect "$image" >/dev/null 2>&1 || missing=$((missing + 1))
done
# Pulled before, offline now: nothing to pull, so no registry is needed.
if (( missing == 0 )) && [[ -z ${DEVSTACK_DEMO_REGISTRY:-} ]]; then
    public "the engine has every one of them already"
    exit 0
fi

# A quick, bounded question to the registry: the registry API answers /v2/
# with 200, or 401 until a token is shown (Docker Hub's anonymous answer).
# Anything else (a captive portal, a proxy's error page) is no registry.
if ! command -v curl >/dev/null 2>&1; then
    say "error: curl is needed to ask $REGISTRY whether it answers (or set DEVSTACK_DEMO_IMAGES=public or replicas)"
    exit 1
fi
rc=0
code=$(curl -s -o /dev/null -w '%{http_code}' --connect-timeout 3 --max-time 5 "$REGISTRY/v2/" 2>/dev/null) || rc=$?
if (( rc == 0 )) && [[ $code == 200 || $code == 401 ]]; then
    public "$REGISTRY answers (HTTP $code); $missing of them to pull"
else
    case $rc in
        0)   why="HTTP $code at /v2/ is not a registry's answer" ;;
        5|6) why="its name does not resolve" ;;
        7)   why="nothing accepts the connection" ;;
        28)  why="no answer within 5 s" ;;
        35|60) why="its TLS handshake failed" ;;
        *)   why="curl exit $rc" ;;
    esac
    replicas "no registry answered at $REGISTRY: $why"
fi
