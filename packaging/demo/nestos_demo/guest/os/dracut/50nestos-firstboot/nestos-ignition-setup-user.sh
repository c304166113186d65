#!/bin/sh
# Copy the Ignition config `nestos-installer install` wrote to boot/ignition/config.ign to
# /usr/lib/ignition/user.ign, where Ignition's `system` config source reads it (the place
# Fedora CoreOS's ignition-setup-user puts it). Ignition itself then fetches and applies it.
set -eu
mnt=/run/nestos/boot
mkdir -p "$mnt" /usr/lib/ignition
mount -t ext4 -o ro /dev/disk/by-label/boot "$mnt"
if [ -f "$mnt/ignition/config.ign" ]; then
    cp "$mnt/ignition/config.ign" /usr/lib/ignition/user.ign
    chmod 0600 /usr/lib/ignition/user.ign
    echo "nestos: Ignition user config taken from boot/ignition/config.ign"
else
    echo "nestos: no boot/ignition/config.ign; Ignition runs without a user config"
fi
umount "$mnt"
