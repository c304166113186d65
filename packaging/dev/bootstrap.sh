#!/bin/bash
# Set up a Debian 12 machine (as root) for nestos-installer, then run one job:
#   bootstrap.sh demo   build the demo image/stream, serve it over local HTTP, install it
#                       onto a loop disk with nestos-installer, and boot that disk in QEMU
#   bootstrap.sh test   run the whole test suite (extra arguments go to pytest)
# Safe to run again: apt packages and the virtualenv are only added when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
job=${1:-}
shift || true
case $job in demo|test|setup) ;; *) echo "usage: $0 demo|test|setup [pytest args]" >&2; exit 2 ;; esac

APT_PKGS=(
  # installer runtime: GPG, codecs, partitioning, filesystems, kexec
  gnupg gpgv sqv xz-utils zstd gzip util-linux fdisk gdisk e2fsprogs dosfstools xfsprogs kexec-tools cpio
  # building pyparted in the virtualenv
  libparted-dev pkg-config gcc python3-dev python3-venv
  # demo image, live ISO and boots
  qemu-system-x86 ovmf systemd-boot-efi grub-efi-amd64-bin grub-pc-bin busybox-static mtools
  xorriso squashfs-tools kmod file curl mmdebstrap
  # disk-booted test hosts (tests/fixtures/testhost): qcow2 overlays
  qemu-utils
  # test oracles and tools the tests drive
  ignition openssl openssh-client systemd dpkg-dev
  # a filesystem without hard links (exFAT through FUSE) for the output tests
  exfat-fuse exfatprogs
  # building and checking the .deb and .rpm packages
  rpm debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel
  man-db
)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e '.[test]' >.venv/pip.log 2>&1 || { cat .venv/pip.log; exit 1; }
  rm -f .venv/.installed-*; touch "$stamp"
fi

case $job in
  setup) ;;
  demo) PYTHONPATH=packaging/demo exec .venv/bin/python -m nestos_demo run "$@" ;;
  test) exec .venv/bin/python -m pytest -n "${NESTOS_TEST_WORKERS:-2}" --dist loadgroup "$@" ;;
esac
