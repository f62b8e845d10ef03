#!/usr/bin/env bash
# After `make install` / `make uninstall`:  post-install.sh install|uninstall LIBDIR MAJOR
#
# Into a DESTDIR (a packager's staging tree) nothing is done: the package's own scripts run
# ldconfig. Into the system, as root, ldconfig updates the loader's cache. Then, on install,
# it says whether the dynamic loader finds libpfn.so.MAJOR in LIBDIR, and what to do if not.
set -u
action=$1 libdir=$2 major=$3
ldconfig=${LDCONFIG:-ldconfig}
[ -n "${DESTDIR:-}" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    "$ldconfig" || echo "$action: $ldconfig failed: run it yourself so that the loader's cache is current"
fi
[ "$action" = install ] || exit 0
so="libpfn.so.$major"
if "$ldconfig" -p 2>/dev/null | grep -q " => $libdir/$so\$"; then
    echo "install: the dynamic loader finds $libdir/$so"
else
    echo "install: note: the dynamic loader does not search $libdir, so programs linked with -lpfn"
    echo "         do not start as they are. Either add $libdir to /etc/ld.so.conf.d/libpfn.conf"
    echo "         and run ldconfig (as root), or run them with LD_LIBRARY_PATH=$libdir, or link them"
    echo "         with -Wl,-rpath,$libdir."
fi
