# Sourced by /init (as /checks.sh; `cargo xtask qemu test` adds it with the static `preba`) once preba-guest-check has
# released the card: the CLI over kernel VFIO. $BDF is the card; check() records a result.
IMGS=$(ls /fixtures/images/imagenet_*.jpg /fixtures/images/sampling_*.jpg /fixtures/images/size_*.jpg)
N=$(echo $IMGS | wc -w)

if preba card info vfio:$BDF > /tmp/info.txt 2>&1; then
    check cli-card-info ok "$(head -1 /tmp/info.txt)"
else
    check cli-card-info fail "$(tail -3 /tmp/info.txt | tr '\n' ' ')"
fi
cat /tmp/info.txt

# u8 NCHW, then normalized f32: the card's tensors must equal the CPU path's, byte for byte.
for mode in u8 f32; do
    if [ $mode = f32 ]; then
        OPTS="--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225"
    else
        OPTS=""
    fi
    preba preprocess --card cpu $OPTS -o /tmp/cpu-$mode.npy $IMGS > /tmp/cpu.log 2>&1
    RC_CPU=$?
    T0=$(cut -d' ' -f1 /proc/uptime)
    preba preprocess --card vfio:$BDF $OPTS -o /tmp/card-$mode.npy --manifest /tmp/card-$mode.json $IMGS > /tmp/card.log 2>&1
    RC=$?
    T1=$(cut -d' ' -f1 /proc/uptime)
    if [ $RC = 0 ] && [ $RC_CPU = 0 ] && cmp -s /tmp/cpu-$mode.npy /tmp/card-$mode.npy; then
        check cli-preprocess-vfio-$mode ok "$N images, $(wc -c < /tmp/card-$mode.npy) bytes identical to --card cpu ($T0 -> $T1 s)"
    else
        check cli-preprocess-vfio-$mode fail "exit $RC (cpu $RC_CPU): $(tail -3 /tmp/card.log | tr '\n' ' ')"
    fi
    if grep -q '"card"' /tmp/card-$mode.json 2>/dev/null; then
        check cli-manifest-card-$mode ok
    else
        check cli-manifest-card-$mode fail "manifest does not say card"
    fi
done

# Inputs the card refuses go through the CPU fallback; corrupt ones fail alone.
preba preprocess --card vfio:$BDF -o /tmp/mixed.npy --manifest /tmp/mixed.json \
    /fixtures/images/progressive_chelsea.jpg /fixtures/images/imagenet_chelsea.jpg > /tmp/mixed.log 2>&1
RC=$?
if [ $RC = 0 ]; then
    check cli-unsupported-fallback ok
else
    check cli-unsupported-fallback fail "exit $RC: $(tail -3 /tmp/mixed.log | tr '\n' ' ')"
fi

# Firmware update over PCIe from the guest: flash /fw-b.elf (same code, another build id) into
# the slot that is not running, activate, reset (VFIO), then IDENTIFY through `card info` must
# report the new build id. Last, so the checks above ran on the factory image.
if [ -f /fw-b.elf ]; then
    OLD=$(preba card info vfio:$BDF 2>/dev/null | sed -n 's/^running .* build \([0-9a-f]*\)$/\1/p')
    T0=$(cut -d' ' -f1 /proc/uptime)
    if preba card flash --card vfio:$BDF /fw-b.elf > /tmp/flash.txt 2>&1; then
        T1=$(cut -d' ' -f1 /proc/uptime)
        NEW=$(sed -n 's/^flashed build \([0-9a-f]*\) .*/\1/p' /tmp/flash.txt)
        check cli-card-flash ok "$(tail -1 /tmp/flash.txt) ($T0 -> $T1 s)"
    else
        NEW=
        check cli-card-flash fail "$(tail -3 /tmp/flash.txt | tr '\n' ' ')"
    fi
    preba card info vfio:$BDF > /tmp/info2.txt 2>&1
    if [ -n "$NEW" ] && [ "$NEW" != "$OLD" ] && grep -q "^running .* build $NEW\$" /tmp/info2.txt; then
        check cli-card-info-after-flash ok "build $OLD -> $NEW: $(grep '^running' /tmp/info2.txt)"
    else
        check cli-card-info-after-flash fail "old $OLD new $NEW: $(grep -E '^(running|last boot|slot)' /tmp/info2.txt | tr '\n' ' ')"
    fi
fi
