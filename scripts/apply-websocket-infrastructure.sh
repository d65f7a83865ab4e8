#!/usr/bin/env bash
# Apply (or preview) the WebSocket infrastructure with Pulumi: select the stack,
# write the stack config the options name, then `pulumi up` or `pulumi preview`
# with the policy pack in policy/. A thin wrapper: Pulumi's exit status is ours.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: scripts/apply-websocket-infrastructure.sh [--stack S] [--namespace NS]
           [--no-default-session] [--image IMAGE] [--config KEY=VALUE]...
           [--preview] [--yes]

Sets the stack config, then runs `pulumi up` (or `pulumi preview`) from the
repository root with `--policy-pack policy`.

  --stack S             the Pulumi stack (default: dev); created when missing
  --namespace NS        Kubernetes namespace of the proxy and the sessions
  --no-default-session  do not deploy the always-available session "default"
  --image IMAGE         the session image (pinned: a version tag or a digest)
  --config KEY=VALUE    any other stack config key (repeatable), e.g. maxSessions=100
  --preview             only show what would change (`pulumi preview --diff`)
  --yes                 apply without asking (needed without a terminal)
  -h, --help            show this help

Needs the Pulumi CLI (https://www.pulumi.com/docs/install/) and a backend login.
Exit status: Pulumi's (0 applied or previewed), 1 missing tool or failure, 2 usage error.
USAGE
}

die_usage() {
    echo "error: $*" >&2
    usage >&2
    exit 2
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stack=dev
preview=false
yes=false
config=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --stack)
            [ "$#" -ge 2 ] || die_usage "--stack needs a value"
            stack=$2; shift 2 ;;
        --namespace)
            [ "$#" -ge 2 ] || die_usage "--namespace needs a value"
            config+=("namespace=$2"); shift 2 ;;
        --no-default-session) config+=("defaultSessionEnabled=false"); shift ;;
        --image)
            [ "$#" -ge 2 ] || die_usage "--image needs a value"
            config+=("sessionImage=$2"); shift 2 ;;
        --config)
            [ "$#" -ge 2 ] || die_usage "--config needs KEY=VALUE"
            config+=("$2"); shift 2 ;;
        --preview) preview=true; shift ;;
        --yes) yes=true; shift ;;
        *) die_usage "unknown argument: $1" ;;
    esac
done

# Stack names: letters, digits, '-', '_', '.' (optionally org/project/ prefixed).
[[ "$stack" =~ ^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+){0,2}$ ]] \
    || die_usage "invalid stack name: $stack"
for pair in "${config[@]}"; do
    [[ "$pair" =~ ^[A-Za-z][A-Za-z0-9]*=.+$ ]] \
        || die_usage "config must look like key=value with a camelCase key: $pair"
done
for pair in "${config[@]}"; do
    if [ "${pair%%=*}" = namespace ]; then
        [[ "${pair#*=}" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] \
            || die_usage "invalid namespace (one DNS label): ${pair#*=}"
    fi
done

if ! command -v pulumi >/dev/null 2>&1; then
    echo "error: the pulumi CLI is not installed or not on PATH" >&2
    echo "hint: install it (https://www.pulumi.com/docs/install/), then 'pulumi login'" >&2
    exit 1
fi
cd "$root"
[ -f Pulumi.yaml ] || { echo "error: no Pulumi.yaml in $root" >&2; exit 1; }

pulumi stack select --create "$stack"
for pair in "${config[@]}"; do
    pulumi config set --stack "$stack" -- "${pair%%=*}" "${pair#*=}"
done

policy=()
[ -d policy ] && policy=(--policy-pack policy)
if [ "$preview" = true ]; then
    exec pulumi preview --stack "$stack" --diff "${policy[@]}"
fi
confirm=()
[ "$yes" = true ] && confirm=(--yes)
exec pulumi up --stack "$stack" "${policy[@]}" "${confirm[@]}"
