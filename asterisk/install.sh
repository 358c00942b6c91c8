#!/usr/bin/env bash
# Makes Asterisk 22 available to the server, once; later runs return at once.
#
# Where the machine packages Asterisk (Debian 13+, Ubuntu, the Docker image), the package is
# used. Where it does not (Debian 12), a Debian sid root folder with Asterisk is built with
# debootstrap into IVR_ASTERISK_ROOT (default .cache/asterisk-root) and run under chroot.
# The mirror is the one this machine's apt already uses.
set -euo pipefail
cd "$(dirname "$0")/.."

root="${IVR_ASTERISK_ROOT:-.cache/asterisk-root}"
mode="${IVR_ASTERISK_MODE:-auto}"

if [ "$mode" != "root" ] && command -v asterisk >/dev/null 2>&1; then
    exit 0  # a packaged Asterisk is installed on this machine
fi
if [ -f "$root/.ready" ]; then
    exit 0
fi

if [ "$mode" = "host" ]; then
    echo "IVR_ASTERISK_MODE=host but no asterisk is installed: apt-get install asterisk" >&2
    exit 1
fi

if [ "$mode" = "auto" ] && apt-cache policy asterisk 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    echo "installing the packaged Asterisk"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q asterisk asterisk-modules
    exit 0
fi

# The first Debian mirror of this machine's apt sources (deb822 or one-line format).
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$f")
    [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '/^deb / && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
    echo "no Debian mirror found in /etc/apt/sources.list(.d): cannot build the Asterisk root" >&2
    exit 1
fi

echo "building the Asterisk root folder in $root (Debian sid, about 500 MB; once)"
rm -rf "$root.partial"
mkdir -p "$(dirname "$root")"
debootstrap --variant=minbase --include=asterisk,asterisk-modules sid "$root.partial" "$mirror" \
    > "$(dirname "$root")/debootstrap.log" 2>&1 || {
    echo "debootstrap failed; the end of its log:" >&2
    tail -20 "$(dirname "$root")/debootstrap.log" >&2
    exit 1
}
# The package's own config and the root's service scripts are not used: ivr renders its own.
chroot "$root.partial" /usr/sbin/asterisk -V > "$root.partial/.ready"
rm -rf "$root"
mv "$root.partial" "$root"
echo "Asterisk root folder ready: $(cat "$root/.ready")"
