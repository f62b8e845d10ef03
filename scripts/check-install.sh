#!/usr/bin/env bash
# Installs into a temporary prefix (with DESTDIR, as a packager would), then builds and runs a
# program against it through pkg-config, shared and static, and checks that the versions agree
# with Cargo.toml. Finally uninstalls and checks that nothing is left.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=/opt/libpfn-check
dest="$tmp/dest"
make -s -C "$top" install PREFIX="$prefix" DESTDIR="$dest" >/dev/null
root="$dest$prefix"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)
major=${version%%.*}
passed=0 failed=0
check() { if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "check-install: FAILED: $1"; fi; }

check "shared library with its version" "[ -f '$root/lib/libpfn.so.$version' ]"
check "soname link" "[ \"\$(readlink '$root/lib/libpfn.so.$major')\" = libpfn.so.$version ]"
check "dev link" "[ \"\$(readlink '$root/lib/libpfn.so')\" = libpfn.so.$major ]"
check "soname recorded" "readelf -d '$root/lib/libpfn.so.$version' | grep -q 'SONAME.*libpfn.so.$major'"
check "static library" "[ -f '$root/lib/libpfn.a' ]"
check "header" "cmp -s '$root/include/pfn.h' '$top/include/pfn.h'"

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
    char want[64];
    snprintf(want, sizeof want, "libpfn %s", PFN_VERSION_STRING);
    pfn_t p = pfn_to_pfn_t(42);
    if (strcmp(pfn_version(), want) || pfn_t_to_phys(p) != 42 * 4096) {
        printf("mismatch: %s vs %s\n", pfn_version(), want);
        return 1;
    }
    printf("%s\n", pfn_version());
    return 0;
}
C
cc -Wall -Werror -o "$tmp/app_shared" "$tmp/app.c" $(pkg-config --cflags --libs pfn)
static_libs=$(pkg-config --static --libs pfn | sed 's/-lpfn/-Wl,-Bstatic -lpfn -Wl,-Bdynamic/')
cc -Wall -Werror -o "$tmp/app_static" "$tmp/app.c" $(pkg-config --cflags pfn) $static_libs
check "shared build runs" "[ \"\$(LD_LIBRARY_PATH='$root/lib' '$tmp/app_shared')\" = 'libpfn $version' ]"
check "shared build needs libpfn.so.$major" "readelf -d '$tmp/app_shared' | grep -q 'NEEDED.*libpfn.so.$major'"
check "static build runs" "[ \"\$('$tmp/app_static')\" = 'libpfn $version' ]"
check "static build needs no libpfn.so" "! readelf -d '$tmp/app_static' | grep -q 'NEEDED.*libpfn'"

make -s -C "$top" uninstall PREFIX="$prefix" DESTDIR="$dest" >/dev/null
check "uninstall leaves no file" "[ -z \"\$(find '$root' -type f 2>/dev/null)\" ]"
echo "check-install: $passed passed, $failed failed"
[ "$failed" = 0 ]
