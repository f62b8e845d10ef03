#!/usr/bin/env python3
"""Every name include/pfn.h defines at file scope is the library's own: it starts with pfn_,
PFN_, __pfn or pfn__ (internal), or is one of the kernel's names the seed keeps (kmap_atomic_*,
kunmap_atomic_*, devm_register_kmap_pfn_range, phys_to_pfn_t, __pfn_t). A short internal
constant (CAP, NIL, SIZE, ...) leaking into the header breaks user programs that use the same
name, so `make test` runs this."""
import re
import sys

KERNEL = re.compile(r"^(kmap_atomic_\w+|kunmap_atomic_\w+|devm_register_kmap_pfn_range|"
                    r"phys_to_pfn_t|__pfn_t|__pfn_\w+)$")
OURS = re.compile(r"^(pfn_|PFN_|pfn__|PFN__)")

text = open(sys.argv[1] if len(sys.argv) > 1 else "include/pfn.h").read()
# Drop comments, so that prose never counts as a definition.
code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
code = re.sub(r"//[^\n]*", "", code)
names = set()
names.update(re.findall(r"^\s*#\s*define\s+(\w+)", code, re.M))
names.update(re.findall(r"^typedef\b[^;{]*?(\w+)\s*;", code, re.M))
names.update(re.findall(r"^\}\s*(\w+)\s*;", code, re.M))
names.update(re.findall(r"^(?:typedef\s+)?(?:struct|enum|union)\s+(\w+)\s*\{", code, re.M))
# File-scope function declarations and definitions: a line that is not indented, with a name
# followed by "(".
for line in code.splitlines():
    if not line or line[0].isspace() or line.startswith("#"):
        continue
    m = re.match(r"^[\w\s\*]*?\b(\w+)\s*\(", line)
    if m and m.group(1) not in ("if", "while", "for", "return", "sizeof"):
        names.add(m.group(1))
foreign = sorted(n for n in names if not OURS.match(n) and not KERNEL.match(n)
                 and n not in ("PFN_H",))
if foreign:
    print("include/pfn.h defines names that are not the library's own:", ", ".join(foreign))
    print("(exclude them in cbindgen.toml, or make them pub(crate) in the Rust sources)")
    sys.exit(1)
print(f"include/pfn.h: {len(names)} names, all the library's own")
