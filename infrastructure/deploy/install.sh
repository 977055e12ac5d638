#!/bin/sh
# The compose file's one-shot `install` service: installs the project with the exact versions
# of uv.lock into a fresh virtual environment on the shared `signup-venv` volume, then points
# $SIGNUP_VENV_ROOT/current at it in one rename. Every other Python service runs
# /opt/signup/current/bin/signup from that volume, so the project is installed once per
# `docker compose up` instead of once per container (there is no Dockerfile: the top level of
# the repository is fixed). The source is mounted read-only at $SIGNUP_SOURCE.
set -eu

source_dir="${SIGNUP_SOURCE:-/app}"
root="${SIGNUP_VENV_ROOT:-/opt/signup}"

command -v uv >/dev/null 2>&1 \
    || pip install --quiet --disable-pip-version-check --root-user-action=ignore uv

mkdir -p "$root/envs"
target="$root/envs/$(date -u +%Y%m%dT%H%M%S)-$$"
# --no-editable: the environment must not depend on the mounted source staying where it is.
UV_PROJECT_ENVIRONMENT="$target" uv sync \
    --project "$source_dir" --frozen --no-dev --no-editable --compile-bytecode \
    --python "$(command -v python3)"
"$target/bin/signup" --help >/dev/null

ln -sfn "$target" "$root/current.new"
mv -T "$root/current.new" "$root/current"
# Keep this environment and the one before it (containers of the previous `up` may still run
# it); drop older ones.
ls -1dt "$root"/envs/* | tail -n +3 | xargs -r rm -rf
echo "signup installed in $target"
