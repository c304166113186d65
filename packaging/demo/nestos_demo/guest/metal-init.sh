#!/bin/busybox sh
# /init of the NestOS demo metal image: finds the filesystem labelled `boot`,
# prints what an installer left there between the demo markers on ttyS0, and
# powers off. Parsed by nestos_demo.qemu.parse_markers().
/bin/busybox --install -s /bin
export PATH=/bin
# cat a file and end its last line (whether or not the file does)
catnl() { cat "$1"; [ -n "$(tail -c1 "$1")" ] && echo; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </lib/modules/load.order
echo 1 >/proc/sys/kernel/printk   # keep kernel messages out of the marker block
# Write to the serial port itself: a console=tty0 karg appended last would
# otherwise make /dev/console a VGA that -nodefaults does not have.
[ -c /dev/ttyS0 ] && exec >/dev/ttyS0 2>&1
dev=; i=0
while [ $i -lt 50 ]; do dev=$(findfs LABEL=boot 2>/dev/null) && break; sleep 0.2; i=$((i+1)); done
echo "=====NESTOS-DEMO-BEGIN====="
echo "CMDLINE: $(cat /proc/cmdline)"
echo "UPTIME: $(cut -d' ' -f1 /proc/uptime)"
echo "BOOTDEV: ${dev:-not found}"
if [ -n "$dev" ] && mount -t ext4 -o ro "$dev" /mnt; then
  echo "ENTRIES: $(ls /mnt/loader/entries | tr '\n' ' ')"
  for e in /mnt/loader/entries/*.conf; do
    echo "BLS-OPTIONS: $(sed -n 's/^options //p' "$e")"
  done
  if [ -e /mnt/ignition.firstboot ]; then
    echo "FIRSTBOOT: present, content: [$(cat /mnt/ignition.firstboot)]"
  else echo "FIRSTBOOT: absent"; fi
  if [ -e /mnt/ignition/config.ign ]; then
    echo "CONFIG-IGN-MODE: $(stat -c %a /mnt/ignition/config.ign) dir $(stat -c %a /mnt/ignition)"
    echo "CONFIG-IGN-BEGIN"; catnl /mnt/ignition/config.ign; echo "CONFIG-IGN-END"
  else echo "CONFIG-IGN: absent"; fi
  if [ -d /mnt/nestos-firstboot-network ]; then
    echo "NETWORK-FILES: $(ls /mnt/nestos-firstboot-network | tr '\n' ' ')"
    for f in /mnt/nestos-firstboot-network/*; do
      [ -f "$f" ] || continue
      echo "NETWORK-FILE-BEGIN $(basename "$f")"; catnl "$f"; echo "NETWORK-FILE-END"
    done
  else echo "NETWORK-FILES: absent"; fi
  if [ -e /mnt/nestos/platforms.json ]; then
    echo "PLATFORMS: $(sed -n 's/^  "\([a-z0-9_-]*\)": {.*/\1/p' /mnt/nestos/platforms.json | tr '\n' ' ')"
  else echo "PLATFORMS: absent"; fi
  echo "GRUB-CONSOLE: $(sed -n '/^# CONSOLE-SETTINGS-START/,/^# CONSOLE-SETTINGS-END/p' /mnt/grub2/grub.cfg \
    | grep -v '^# CONSOLE-SETTINGS-' | tr '\n' ';' | sed 's/;$//; s/;/; /g')"
  umount /mnt
fi
echo "=====NESTOS-DEMO-END====="
poweroff -f
