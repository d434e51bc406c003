#!/usr/bin/env bash
# Make the project's virtualenv (.venv) with dsw and its test and lint tools; a no-op when
# pyproject.toml has not changed since the last install.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
stamp="$venv/.installed-$(sha256sum "$here/pyproject.toml" | cut -c1-16)"

say() { printf '[provision:python] %s\n' "$*"; }

if [ -f "$stamp" ]; then
  say "virtualenv up to date ($venv)"
  exit 0
fi
python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { say "dsw needs Python >= 3.11" >&2; exit 1; }
[ -x "$venv/bin/python" ] || { say "creating $venv"; "$python" -m venv "$venv"; }
say "installing dsw with its test and lint tools"
"$venv/bin/pip" install -q --disable-pip-version-check -e "$here[test,lint]"
rm -f "$venv"/.installed-*
touch "$stamp"
