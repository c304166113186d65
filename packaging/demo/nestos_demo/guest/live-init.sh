#!/bin/busybox sh
# /init of the NestOS demo live environment (ISO and PXE): prints the kernel
# command line, the Ignition config embedded in images/ignition.img (the
# kernel unpacks it to /config.ign), the customize payload files and where the
# rootfs came from, between the demo markers on ttyS0, then powers off.
/bin/busybox --install -s /bin
export PATH=/bin
# cat a file and end its last line (whether or not the file does)
catnl() { cat "$1"; [ -n "$(tail -c1 "$1")" ] && echo; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </lib/modules/load.order
echo 1 >/proc/sys/kernel/printk
[ -c /dev/ttyS0 ] && exec >/dev/ttyS0 2>&1
iso=
case " $(cat /proc/cmdline) " in
  *" nestos.liveiso="*)
    i=0
    while [ $i -lt 50 ]; do
      for d in /dev/sr0 /dev/sr1; do [ -b "$d" ] && iso=$d && break 2; done
      sleep 0.2; i=$((i+1))
    done ;;
esac
echo "=====NESTOS-DEMO-BEGIN====="
echo "CMDLINE: $(cat /proc/cmdline)"
echo "UPTIME: $(cut -d' ' -f1 /proc/uptime)"
echo "LIVE-INITRAMFS: $([ -e /etc/nestos-live-initramfs ] && echo present || echo absent)"
if [ -e /config.ign ]; then
  echo "CONFIG-IGN-BEGIN"; catnl /config.ign; echo "CONFIG-IGN-END"
else echo "CONFIG-IGN: absent"; fi
if [ -d /etc/nestos-firstboot-network ]; then
  echo "NETWORK-FILES: $(ls /etc/nestos-firstboot-network | tr '\n' ' ')"
  for f in /etc/nestos-firstboot-network/*; do
    [ -f "$f" ] || continue
    echo "NETWORK-FILE-BEGIN $(basename "$f")"; catnl "$f"; echo "NETWORK-FILE-END"
  done
else echo "NETWORK-FILES: absent"; fi
if [ -e /root.squashfs ]; then echo "ROOTFS: initrd"
elif [ -n "$iso" ] && mount -t iso9660 -o ro "$iso" /mnt; then
  if [ -e /mnt/images/pxeboot/rootfs.img ]; then echo "ROOTFS: iso $iso"; else echo "ROOTFS: absent"; fi
  umount /mnt
else echo "ROOTFS: absent"; fi
echo "=====NESTOS-DEMO-END====="
poweroff -f
