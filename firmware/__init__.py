"""The DKC firmware, sans-I/O (see docs/ARCHITECTURE.md)."""

if not __debug__:   # the accounting invariants are assertions: never run without them
    raise RuntimeError("the firmware refuses to run with assertions off (python -O)")
