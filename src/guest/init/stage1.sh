#!/bin/busybox sh
# Hearth initramfs, stage 1: load the virtio modules, mount the root disk, copy Hearth's guest files
# onto a tmpfs at <root>/run/hearth (nothing in the image changes) and switch_root to hearth-init.
# With "hearth.probe" on the kernel command line it only proves the kernel reached userspace.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
B=/bin/busybox
fail() {
  echo "hearth-stage1: $*" > /dev/console
  $B sleep 1
  $B poweroff -f
}
case " $($B cat /proc/cmdline) " in
  *" hearth.probe "*) echo "HEARTH_PROBE_OK" > /dev/console; $B poweroff -f ;;
esac
while read -r m; do
  $B insmod "/lib/modules/$m.ko" || fail "cannot load module $m"
done < /lib/modules/load-order
$B mkdir -p /newroot
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do $B usleep 10000; i=$((i + 1)); done
$B mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount the root disk /dev/vda"
[ -d /newroot/run ] || $B mkdir -p /newroot/run || fail "cannot create /run on the root disk"
$B mount -t tmpfs -o mode=0755,nosuid,nodev run /newroot/run || fail "cannot mount /run"
$B mkdir -p /newroot/run/hearth
$B cp -a /hearth/. /newroot/run/hearth/ || fail "cannot copy Hearth's guest files"
$B umount /proc /sys
[ -d /newroot/dev ] || $B mkdir /newroot/dev
$B mount --move /dev /newroot/dev || fail "cannot move /dev"
exec $B switch_root /newroot /run/hearth/init
