#!/bin/sh
# Copy boot/nestos-firstboot-network/* (written by `nestos-installer install
# --copy-network`) into /sysroot/etc/NetworkManager/system-connections/ (0600, root), unless
# a file of that name is already there. The first boot's end removes them from `boot`.
set -eu
mnt=/run/nestos/boot
src="$mnt/nestos-firstboot-network"
dst=/sysroot/etc/NetworkManager/system-connections
mkdir -p "$mnt"
mount -t ext4 -o ro /dev/disk/by-label/boot "$mnt"
if [ -d "$src" ]; then
    mkdir -p "$dst"
    for f in "$src"/*; do
        [ -f "$f" ] || continue
        name=$(basename "$f")
        if [ -e "$dst/$name" ]; then
            echo "nestos: keeping $name from the Ignition config"
            continue
        fi
        cp "$f" "$dst/$name"
        chmod 0600 "$dst/$name"
        echo "nestos: network keyfile $name copied into the new root"
    done
fi
umount "$mnt"
