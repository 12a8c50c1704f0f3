# Sourced by /init (as /checks.sh; `cargo xtask qemu test` adds it with the static `preba`) once preba-guest-check has
# released the card: the CLI over kernel VFIO. $BDF is the card; check() records a result.
# IMGS: inputs the card supports, which the all-card runs below must make on the card alone.
# UNSUPPORTED: valid JPEGs the card refuses (4:1:1 sampling, progressive; preba-guest-check's
# image-* checks show UnsupportedFormat from card and golden model), which must take the CPU
# fallback. A fixture moving between the two fails a check until this list follows.
UNSUPPORTED="/fixtures/images/sampling_411.jpg /fixtures/images/progressive_chelsea.jpg"
IMGS=$(ls /fixtures/images/imagenet_*.jpg /fixtures/images/sampling_*.jpg /fixtures/images/size_*.jpg |
    grep -v '/sampling_411\.jpg$')
N=$(echo $IMGS | wc -w)

# The manifest `preba preprocess --manifest` writes (host-driver/src/cli.rs) has one JSON entry
# a line, each with "path" (as given), "status" ("ok"/"error") and "via" ("card",
# "cpu-fallback", "cpu"). Entries in manifest $1.
entries() { grep -c '"path":' "$1" 2>/dev/null || true; }
# Prints each input (args after $1 $2) that manifest $1 does not show done exactly once with
# status ok via $2, with what its entry says; prints nothing when all were.
not_via() {
    m=$1; via=$2; shift 2
    for f in "$@"; do
        n=$(grep -cF "\"path\":\"$f\"" "$m" 2>/dev/null || true)
        e=$(grep -F "\"path\":\"$f\"" "$m" 2>/dev/null)
        if [ "$n" != 1 ]; then
            echo "$f: ${n:-0} entries"
        elif ! echo "$e" | grep -qF '"status":"ok"' || ! echo "$e" | grep -qF "\"via\":\"$via\""; then
            echo "$f: $(echo "$e" | grep -oE '"(status|via|error)":("[^"]*"|null)' | tr '\n' ' ')"
        fi
    done
}

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
    # Every input made by the card: identical tensors alone would also come from a run that
    # fell back to the CPU for some (or all) of them.
    BAD=$(not_via /tmp/card-$mode.json card $IMGS)
    E=$(entries /tmp/card-$mode.json)
    if [ "$E" = $N ] && [ -z "$BAD" ]; then
        check cli-manifest-card-$mode ok "$N of $N inputs via card, 0 CPU fallbacks"
    else
        check cli-manifest-card-$mode fail "$E entries for $N inputs; not via card: $(echo "$BAD" | head -5 | tr '\n' ';')"
    fi
done

# Inputs the card refuses go through the CPU fallback, the others in the same run still
# through the card; the tensors are the CPU path's either way.
MIXED="$UNSUPPORTED /fixtures/images/imagenet_chelsea.jpg"
preba preprocess --card cpu -o /tmp/mixed-cpu.npy $MIXED > /tmp/mixed-cpu.log 2>&1
RC_CPU=$?
preba preprocess --card vfio:$BDF -o /tmp/mixed.npy --manifest /tmp/mixed.json $MIXED > /tmp/mixed.log 2>&1
RC=$?
BAD=$(
    not_via /tmp/mixed.json cpu-fallback $UNSUPPORTED
    not_via /tmp/mixed.json card /fixtures/images/imagenet_chelsea.jpg
)
E=$(entries /tmp/mixed.json)
if [ $RC = 0 ] && [ $RC_CPU = 0 ] && [ "$E" = $(echo $MIXED | wc -w) ] && [ -z "$BAD" ] &&
    cmp -s /tmp/mixed-cpu.npy /tmp/mixed.npy; then
    check cli-unsupported-fallback ok "4:1:1 and progressive via cpu-fallback, baseline via card, identical to --card cpu"
else
    check cli-unsupported-fallback fail "exit $RC (cpu $RC_CPU), $E entries: $(echo "$BAD" | tr '\n' ';') $(tail -3 /tmp/mixed.log | tr '\n' ' ')"
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
