#!/bin/bash
# dracut module of the NestOS demo image: the distro glue around Ignition's own dracut
# module (30ignition), as Fedora CoreOS has it. On the first boot only (the units hang off
# ignition-complete.target), it hands boot/ignition/config.ign to Ignition and moves the
# keyfiles `nestos-installer install --copy-network` left on `boot` into the new root.

check() {
    return 0
}

depends() {
    echo ignition
}

install_firstboot_unit() {
    local unit="$1"
    inst_simple "$moddir/$unit" "$systemdsystemunitdir/$unit"
    mkdir -p "$initdir/$systemdsystemunitdir/ignition-complete.target.requires"
    ln_r "$systemdsystemunitdir/$unit" \
        "$systemdsystemunitdir/ignition-complete.target.requires/$unit"
}

install() {
    inst_multiple mount umount cp mkdir chmod basename cat
    inst_script "$moddir/nestos-ignition-setup-user.sh" /usr/sbin/nestos-ignition-setup-user
    # Debian's Ignition relabels for SELinux after its files stage; the root's setfiles
    # (guest/os/bin/setfiles) knows this image has no SELinux and labels nothing
    inst_script /usr/sbin/setfiles /usr/sbin/setfiles
    inst_script "$moddir/nestos-copy-firstboot-network.sh" \
        /usr/sbin/nestos-copy-firstboot-network
    install_firstboot_unit nestos-ignition-setup-user.service
    install_firstboot_unit nestos-copy-firstboot-network.service
}
