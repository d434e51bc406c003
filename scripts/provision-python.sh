#!/usr/bin/env bash
# Make the project's virtualenv (.venv) with dsw and its test and lint tools, at the versions and
# hashes of requirements/dev.lock, built with requirements/build.lock's setuptools (`just lock`
# refreshes both); a no-op while neither pyproject.toml nor a lock has changed since.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
lock="$here/requirements/dev.lock"
build_lock="$here/requirements/build.lock"
stamp="$venv/.installed-$(cat "$here/pyproject.toml" "$lock" "$build_lock" | sha256sum | cut -c1-16)"

say() { printf '[provision:python] %s\n' "$*"; }

if [ -f "$stamp" ]; then
  say "virtualenv up to date ($venv)"
  exit 0
fi
python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { say "dsw needs Python >= 3.11" >&2; exit 1; }
[ -x "$venv/bin/python" ] || { say "creating $venv"; "$python" -m venv "$venv"; }
say "installing dsw with its test and lint tools (${lock#"$here/"})"
pip=("$venv/bin/pip" --disable-pip-version-check)
"${pip[@]}" install -q --require-hashes -r "$lock" -r "$build_lock"
# Built with the locked setuptools, not one fetched for an isolated build.
"${pip[@]}" install -q --no-deps --no-build-isolation -e "$here"
# A dependency pyproject.toml names but the lock lacks would go unnoticed under --no-deps.
broken=$("${pip[@]}" check 2>&1) || { say "$broken" >&2; exit 1; }
rm -f "$venv"/.installed-*
touch "$stamp"
