#!/bin/sh
# One build step for nestos-installer: sdist + wheel, section-8 man pages, shell completions,
# the x2nestos zipapp and the Ansible collection; optionally the Debian and RPM packages.
# Usage: packaging/build.sh [-o OUTDIR] [--deb] [--rpm]   (default OUTDIR: dist/)
# Env: PYTHON (default: the repo's .venv python, else python3).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$repo/dist"
deb=0
rpm=0
while [ $# -gt 0 ]; do
    case "$1" in
        -o) out="$2"; shift 2 ;;
        --deb) deb=1; shift ;;
        --rpm) rpm=1; shift ;;
        -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=$("$PYTHON" -c 'import nestos_installer; print(nestos_installer.__version__)')
: "${SOURCE_DATE_EPOCH:=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

# 1. a clean copy of the source tree (never build inside the shared checkout)
src="$out/nestos-installer-$version"
rm -rf "$src"
mkdir -p "$src"
tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./dist --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=.pytest_cache --exclude=./out -cf - . | tar -C "$src" -xf -

# 2. generated docs: man pages and completions, shipped inside the source tree
gen="$src/packaging/generated"
mkdir -p "$gen/man" "$gen/completions"
"$PYTHON" "$here/man/genman.py" "$gen/man"
for shell in bash zsh fish; do
    _NESTOS_INSTALLER_COMPLETE=${shell}_source "$PYTHON" -c \
        'from nestos_installer.cli import main; main()' >"$gen/completions/nestos-installer.$shell"
done
rm -rf "$out/man" "$out/completions"
cp -r "$gen/man" "$gen/completions" "$out/"

# 3. sdist + wheel (no isolation when setuptools and wheel are already importable)
iso="--no-isolation"
"$PYTHON" -c 'import setuptools, wheel' 2>/dev/null || iso=""
(cd "$src" && "$PYTHON" -m build $iso --sdist --wheel --outdir "$out" . >"$out/build.log" 2>&1) || {
    cat "$out/build.log" >&2; exit 1; }
rm -rf "$src/build" "$src"/*.egg-info

# 4. the x2nestos zipapp (builder owned by packaging/zipapp)
"$PYTHON" "$repo/packaging/zipapp/build_pyz.py" -o "$out/x2nestos.pyz"

# 4b. the Ansible collection nestos.x2nestos (packaging/ansible): nestos-x2nestos-VERSION.tar.gz
galaxy=$(dirname "$PYTHON")/ansible-galaxy
[ -x "$galaxy" ] || galaxy=$(command -v ansible-galaxy || true)
if [ -n "$galaxy" ]; then
    "$galaxy" collection build "$src/packaging/ansible" --output-path "$out" --force >/dev/null
else
    echo "build.sh: ansible-galaxy not found (ansible-core): the Ansible collection is not built" >&2
fi

# 5. full source tarball (with generated docs) for rpmbuild
tar -C "$out" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -czf "$out/nestos-installer-$version-full.tar.gz" "nestos-installer-$version"

if [ "$deb" -eq 1 ]; then
    rm -rf "$src/debian"
    cp -r "$here/debian" "$src/debian"
    # system python3 (not a pyenv/venv one first on PATH) builds the Debian package
    (cd "$src" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -b -us -uc >"$out/deb.log" 2>&1) || {
        tail -50 "$out/deb.log" >&2; exit 1; }
    rm -rf "$src/debian" "$src/build" "$src"/*.egg-info "$src/.pybuild"
fi

if [ "$rpm" -eq 1 ]; then
    top="$out/rpmbuild"
    rm -rf "$top"
    mkdir -p "$top/SOURCES" "$top/RPMS"
    cp "$out/nestos-installer-$version-full.tar.gz" "$top/SOURCES/"
    # Debian's rpm lacks the openEuler macros: load ours; BuildRequires carry openEuler names
    rpmbuild -bb --nodeps --define "_topdir $top" --define "__python3 $PYTHON" \
        --define "_sourcedir $top/SOURCES" --load "$here/rpm/macros.debian-build" \
        "$here/rpm/nestos-installer.spec" >"$out/rpm.log" 2>&1 || {
        tail -50 "$out/rpm.log" >&2; exit 1; }
    find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \;
fi
ls "$out"
