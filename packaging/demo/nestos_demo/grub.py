"""GRUB for the demo media: the disk's grub.cfg (BLS without blscfg), core images, BIOS setup.

Debian's GRUB has no `blscfg`, so the disk grub.cfg `source`s the BLS entry with title/options/...
defined as functions; that needs linux.mod left out of core.img and no command.lst in $prefix.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path
from typing import List, Sequence

from nestos_demo.util import BuildError, run

GRUB_LIB = Path("/usr/lib/grub")

# Built into the disk core images. NOT linux (see module docstring).
DISK_CORE_MODS = (
    "part_gpt ext2 fat normal search search_label search_fs_uuid search_fs_file configfile "
    "test echo cat regexp serial terminal halt reboot sleep"
).split()

# The ISO core images carry everything: their config is not a BLS entry.
ISO_CORE_MODS = (
    "part_gpt part_msdos iso9660 fat normal search search_label search_fs_file configfile "
    "test echo cat serial terminal halt reboot sleep linux gzio"
).split()

DISK_EARLY_CFG = "search --no-floppy --label boot --set root\nset prefix=($root)/grub2\n"

# Console block as on NestOS/FCOS: `nestos-installer --console/--platform` rewrites it.
DISK_CONSOLE = [
    "serial --speed=115200",
    "terminal_input serial console",
    "terminal_output serial console",
]

DISK_GRUB_CFG = """\
# grub.cfg of the NestOS demo image (/grub2/grub.cfg on the `boot` filesystem).
# Debian's GRUB has no `blscfg`: the BLS entry is read with `source`, with
# title/version/options/linux/initrd defined as functions (linux.mod is not in
# core.img and there is no command.lst, so they are not commands yet).
set timeout=0
# CONSOLE-SETTINGS-START
{console}
# CONSOLE-SETTINGS-END
search --no-floppy --label boot --set root
# Same logic as NestOS / Fedora CoreOS for the first-boot flag file.
set ignition_firstboot=""
if [ -f "/ignition.firstboot" ]; then
  set ignition_network_kcmdline=""
  source "/ignition.firstboot"
  set ignition_firstboot="ignition.firstboot ${{ignition_network_kcmdline}}"
fi
function title   {{ set bls_title="$*"; }}
function version {{ set bls_version="$*"; }}
function options {{ set bls_options="$*"; }}
function linux   {{ set bls_linux="$1"; }}
function initrd  {{ set bls_initrd="$*"; }}
for f in /loader/entries/*.conf; do
  set bls_linux=""
  source "$f"
done
echo "nestos-demo grub: $grub_platform entry '$bls_title'"
insmod linux
linux $bls_linux $bls_options
initrd $bls_initrd
boot
"""


def disk_grub_cfg() -> str:
    return DISK_GRUB_CFG.format(console="\n".join(DISK_CONSOLE))


def _require_platform(platform: str) -> Path:
    d = GRUB_LIB / platform
    if not (d / "moddep.lst").exists():
        pkg = "grub-pc-bin" if platform == "i386-pc" else "grub-efi-amd64-bin"
        raise BuildError(f"GRUB {platform} modules not found in {d} (apt: {pkg})")
    return d


def closure(platform: str, mods: Sequence[str]) -> List[str]:
    """`mods` plus everything they depend on, per the platform's moddep.lst."""
    dep = {}
    for line in (_require_platform(platform) / "moddep.lst").read_text().splitlines():
        k, _, v = line.partition(":")
        dep[k.strip()] = v.split()
    seen: List[str] = []
    todo = list(mods)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.append(m)
            todo += dep.get(m, [])
    return seen


def stage_disk_grub(grub2_dir: Path) -> None:
    """Write grub.cfg and the modules `insmod linux` needs into <boot>/grub2/ (BIOS + EFI)."""
    grub2_dir.mkdir(parents=True, exist_ok=True)
    (grub2_dir / "grub.cfg").write_text(disk_grub_cfg())
    for platform in ("i386-pc", "x86_64-efi"):
        src = _require_platform(platform)
        dst = grub2_dir / platform
        dst.mkdir(exist_ok=True)
        for m in closure(platform, ["linux"]):
            shutil.copy(src / f"{m}.mod", dst / f"{m}.mod")


def mkimage(fmt: str, out: Path, early_cfg: str, prefix: str, mods: Sequence[str]) -> Path:
    """grub-mkimage -O fmt with an embedded early config."""
    platform = {"i386-pc": "i386-pc", "i386-pc-eltorito": "i386-pc", "x86_64-efi": "x86_64-efi"}
    _require_platform(platform[fmt])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "early.cfg"
        cfg.write_text(early_cfg)
        run(["grub-mkimage", "-O", fmt, "-o", out, "-c", cfg, "-p", prefix, *mods])
    return out


def install_bios(disk: Path, bios_boot_lba: int, core_img: Path, sector: int = 512) -> None:
    """What grub-bios-setup does, on an image file: boot.img in the MBR, core.img in BIOS-BOOT.

    Keeps the protective MBR's partition table; patches the kernel-sector LBA (0x5c) and the
    diskboot blocklist at the end of core.img's first sector.
    """
    boot = (GRUB_LIB / "i386-pc" / "boot.img").read_bytes()
    core = bytearray(core_img.read_bytes())
    nsec = (len(core) + 511) // 512
    core += b"\0" * (nsec * 512 - len(core))
    if nsec > (1 << 20) // 512:
        raise BuildError(f"core.img ({nsec} sectors) does not fit the 1 MiB BIOS-BOOT partition")
    seg = struct.unpack_from("<H", core, 0x200 - 2)[0]
    struct.pack_into("<QHH", core, 0x200 - 12, bios_boot_lba + 1, nsec - 1, seg)
    with open(disk, "r+b") as f:
        mbr = bytearray(f.read(512))
        mbr[0:440] = boot[0:440]
        struct.pack_into("<Q", mbr, 0x5C, bios_boot_lba)
        f.seek(0)
        f.write(mbr)
        f.seek(bios_boot_lba * sector)
        f.write(core)
