#!/usr/bin/env bash
# The installed (non-editable) copy works: build the wheel from this tree, install it into a scratch
# venv, and run tests/test_install.py against that copy. It proves what an editable install cannot:
# the wheel holds every file of bench/ and compress/ (package data included), its entry points
# register the plugin and the recipes, `pytest --pyargs bench.test_bench` gates the project it is
# run in with that project's thresholds (a checkout and another project), and `python -m compress`
# and `python -m bench` run from site-packages.
#
# Cheap on purpose (about a minute): the scratch venv gets no second torch. It sees the packages of
# the project's venv (VENV, default .venv) through symlinks, minus the project itself, and installs
# the wheel with --no-deps: the dependencies were resolved from the same pyproject.toml by
# scripts/setup.sh. `tox -e unit` is the full, slow form of this check (a fresh venv, the package
# built from an sdist, every unit test).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
venv=${VENV:-.venv}
case $venv in /*) ;; *) venv="$repo/$venv" ;; esac
py="$venv/bin/python"
[ -x "$py" ] || { echo "check-installed: $py not found; run scripts/setup.sh first" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/resnet18-installed.XXXXXX")
trap 'rm -rf "$work"' EXIT  # rm does not follow the symlinks: the project's venv is never touched

# 1. The wheel, built (isolated, as `python -m build` does) from a copy of the files git would
# ship: tracked and untracked-but-not-ignored. A stale build/ or egg-info in the tree cannot leak
# into it, and the tree gets no new build outputs.
mkdir "$work/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard \
    | (while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
    | tar --null -T - -cf - | tar -xf - -C "$work/src"
else
  tar --exclude=.git --exclude=.venv --exclude=.tox --exclude=build --exclude=dist --exclude='*.egg-info' \
    -cf - . | tar -xf - -C "$work/src"
fi
isolation=()  # offline (PIP_NO_INDEX, as scripts/setup.sh documents): build with the venv's own setuptools
case ${PIP_NO_INDEX:-} in ''|0|false|no|off) ;; *) isolation=(--no-build-isolation) ;; esac
"$py" -m pip wheel -q --no-deps ${isolation[@]+"${isolation[@]}"} -w "$work/dist" "$work/src"
wheel=$(ls "$work"/dist/resnet18_bench-*.whl)
echo "check-installed: built $(basename "$wheel")"

# 2. A scratch venv on the same interpreter that borrows the project venv's packages.
base=$("$py" -c 'import sys; print(sys._base_executable)')
"$base" -m venv --without-pip "$work/venv"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
main_site=$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
for entry in "$main_site"/*; do
  name=${entry##*/}
  case $name in
    bench|compress|resnet18_bench-*|__editable__*|__pycache__) continue ;;  # the project: the wheel brings it
  esac
  ln -s "$entry" "$site/$name"
done
# pip comes through the symlinks; --no-deps --no-index: only the wheel is installed, nothing fetched.
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$wheel"
# pytest's console script, as pip writes it: its own folder first on sys.path, not the current
# directory (the packages seen through symlinks bring no scripts).
cat > "$work/venv/bin/pytest" <<EOF
#!$work/venv/bin/python
import sys

import pytest

sys.exit(pytest.main())
EOF
chmod +x "$work/venv/bin/pytest"
where=$(cd "$work" && "$work/venv/bin/python" -c 'import bench; print(bench.__file__)')
echo "check-installed: bench imported from $where"
case $where in
  "$site"/*) ;;
  *) echo "check-installed: expected bench from $site" >&2; exit 1 ;;
esac

# 3. The checks, run from this checkout with the installed copy; RESNET18_BENCH_REQUIRE_INSTALLED
# makes a copy imported from the checkout a failure instead of a skip.
RESNET18_BENCH_REQUIRE_INSTALLED=1 "$work/venv/bin/pytest" tests/test_install.py -q -p no:cacheprovider -rs "$@"
