"""The package's version: the libpfn release it belongs to (Cargo.toml's; `make test` checks)."""

__version__ = "0.1.0"
