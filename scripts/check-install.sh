#!/usr/bin/env bash
# Installs as a packager and as `sudo make install` would, and checks what a user then gets:
# - into a temporary DESTDIR with no cargo on PATH (the build is up to date: it is used as it
#   is), then builds and runs a program against it through pkg-config, shared and static, and
#   checks that the versions agree with Cargo.toml and the header;
# - with a build that is out of date and no cargo: a clear refusal, nothing installed;
# - install-strip: stripped libraries that still link and run;
# - into a prefix without DESTDIR: ldconfig is run (as root) and the loader guidance printed
#   when the loader does not search the prefix (a stand-in ldconfig records what happens);
# - uninstall leaves nothing.
set -u # no pipefail: "producer | grep -q" may end the producer early (SIGPIPE)
top=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=/opt/libpfn-check
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)
major=${version%%.*}
passed=0 failed=0
check() { if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "check-install: FAILED: $1"; fi; }

# A PATH without cargo (or rustc): what `sudo make install` usually sees.
nocargo=""
IFS=: read -ra dirs <<< "$PATH"
for d in "${dirs[@]}"; do
    [ -x "$d/cargo" ] || [ -x "$d/rustc" ] || nocargo=${nocargo:+$nocargo:}$d
done
check "the PATH for install has no cargo" "(PATH='$nocargo'; ! command -v cargo >/dev/null)"
in_make() { PATH=$nocargo make -C "$top" --no-print-directory "$@"; }

dest="$tmp/dest"
check "install without cargo on PATH" "in_make install PREFIX='$prefix' DESTDIR='$dest' > '$tmp/install.out' 2>&1 || { cat '$tmp/install.out'; false; }"
root="$dest$prefix"
check "shared library with its version" "[ -f '$root/lib/libpfn.so.$version' ]"
check "soname link" "[ \"\$(readlink '$root/lib/libpfn.so.$major')\" = libpfn.so.$version ]"
check "dev link" "[ \"\$(readlink '$root/lib/libpfn.so')\" = libpfn.so.$major ]"
check "soname recorded" "readelf -d '$root/lib/libpfn.so.$version' | grep -q 'SONAME.*libpfn.so.$major'"
check "static library" "[ -f '$root/lib/libpfn.a' ]"
check "header" "cmp -s '$root/include/pfn.h' '$top/include/pfn.h'"
check "no ldconfig and no loader note into a DESTDIR" "! grep -q 'ldconfig\|loader' '$tmp/install.out'"

# pkg-config sees the installed prefix (the .pc names the final prefix; point it at DESTDIR).
export PKG_CONFIG_PATH="$root/lib/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$dest"
check "pkg-config version" "[ \"\$(pkg-config --modversion pfn)\" = '$version' ]"

cat > "$tmp/app.c" <<'C'
#include <stdio.h>
#include <string.h>
#include "pfn.h"
int main(void)
{
    pfn_t p = pfn_to_pfn_t(42);
    if (strcmp(pfn_version(), PFN_VERSION_STRING) || pfn_t_to_phys(p) != 42 * 4096) {
        printf("mismatch: library %s, header %s\n", pfn_version(), PFN_VERSION_STRING);
        return 1;
    }
    printf("%s\n", pfn_version());
    return 0;
}
C
build_apps() { # the installed root, a name suffix
    cc -Wall -Werror -o "$tmp/app_shared$2" "$tmp/app.c" $(pkg-config --cflags --libs pfn) &&
    cc -Wall -Werror -o "$tmp/app_static$2" "$tmp/app.c" $(pkg-config --cflags pfn) \
        $(pkg-config --static --libs pfn | sed 's/-lpfn/-Wl,-Bstatic -lpfn -Wl,-Bdynamic/')
}
check "programs build through pkg-config" "build_apps '$root' ''"
check "shared build runs" "[ \"\$(LD_LIBRARY_PATH='$root/lib' '$tmp/app_shared')\" = '$version' ]"
check "shared build needs libpfn.so.$major" "readelf -d '$tmp/app_shared' | grep -q 'NEEDED.*libpfn.so.$major'"
check "static build runs" "[ \"\$('$tmp/app_static')\" = '$version' ]"
check "static build needs no libpfn.so" "! readelf -d '$tmp/app_static' | grep -q 'NEEDED.*libpfn'"
so_size=$(stat -c %s "$root/lib/libpfn.so.$version")
a_size=$(stat -c %s "$root/lib/libpfn.a")

in_make uninstall PREFIX="$prefix" DESTDIR="$dest" >/dev/null
check "uninstall leaves no file" "[ -z \"\$(find '$root' -type f 2>/dev/null)\" ]"

# An out-of-date build and no cargo: refused with a clear line, nothing installed.
check "an out-of-date build without cargo is refused" "! in_make -W build.rs install PREFIX='$prefix' DESTDIR='$tmp/stale' > '$tmp/stale.out' 2>&1"
check "saying what to do" "grep -q 'cargo is not on PATH: for sudo make install, run make as the user who has Rust first' '$tmp/stale.out' || { cat '$tmp/stale.out'; false; }"
check "and installing nothing" "[ ! -e '$tmp/stale' ]"

# install-strip: much smaller, no debug info, still links and runs both ways.
check "install-strip" "in_make install-strip PREFIX='$prefix' DESTDIR='$dest' >/dev/null"
check "stripped shared library is smaller" "[ \$(stat -c %s '$root/lib/libpfn.so.$version') -lt \$(($so_size / 4)) ]"
check "stripped static library is smaller" "[ \$(stat -c %s '$root/lib/libpfn.a') -lt $a_size ]"
check "no debug info left" "! readelf -S '$root/lib/libpfn.so.$version' | grep -q debug_info"
check "programs build against the stripped libraries" "build_apps '$root' _stripped"
check "the stripped shared build runs" "[ \"\$(LD_LIBRARY_PATH='$root/lib' '$tmp/app_shared_stripped')\" = '$version' ]"
check "the stripped static build runs" "[ \"\$('$tmp/app_static_stripped')\" = '$version' ]"
stripped_so=$(stat -c %s "$root/lib/libpfn.so.$version")
stripped_a=$(stat -c %s "$root/lib/libpfn.a")
in_make uninstall PREFIX="$prefix" DESTDIR="$dest" >/dev/null
echo "check-install: libpfn.so.$version $so_size bytes, stripped $stripped_so; libpfn.a $a_size bytes, stripped $stripped_a"

# Into the system (no DESTDIR): a stand-in ldconfig notes its calls; -p lists what it is told.
fake="$tmp/ldconfig"
cat > "$fake" <<SH
#!/bin/sh
if [ "\$1" = -p ]; then cat "$tmp/ld.cache" 2>/dev/null; else echo "ldconfig \$*" >> "$tmp/ldconfig.calls"; fi
SH
chmod +x "$fake"
sys="$tmp/sys"
check "install into a prefix without DESTDIR" "in_make install PREFIX='$sys' LDCONFIG='$fake' > '$tmp/sys.out' 2>&1"
if [ "$(id -u)" = 0 ]; then
    check "as root, it ran ldconfig" "grep -q '^ldconfig' '$tmp/ldconfig.calls'"
fi
check "it says the loader does not search the prefix, and what to do" "grep -q 'does not search $sys/lib' '$tmp/sys.out' && grep -q 'ld.so.conf.d' '$tmp/sys.out'"
printf '\tlibpfn.so.%s (libc6,x86-64) => %s/lib/libpfn.so.%s\n' "$major" "$sys" "$major" > "$tmp/ld.cache"
check "install where the loader looks" "in_make install PREFIX='$sys' LDCONFIG='$fake' > '$tmp/sys2.out' 2>&1"
check "it says the loader finds it" "grep -q 'the dynamic loader finds $sys/lib/libpfn.so.$major' '$tmp/sys2.out'"
check "uninstall from there" "in_make uninstall PREFIX='$sys' LDCONFIG='$fake' >/dev/null && [ -z \"\$(find '$sys' -type f)\" ]"

# A destination this user cannot write (root can write anywhere: checked when not root).
if [ "$(id -u)" != 0 ]; then
    mkdir -p "$tmp/ro" && chmod 0555 "$tmp/ro"
    check "an unwritable destination is refused" "! in_make install PREFIX='$tmp/ro/p' > '$tmp/ro.out' 2>&1"
    check "saying what to do" "grep -q 'is not writable: run it as root (sudo make install)' '$tmp/ro.out'"
    chmod 0755 "$tmp/ro"
fi

echo "check-install: $passed passed, $failed failed"
[ "$failed" = 0 ]
