"""The C allocator setting every faceres command applies at start-up (torch-free, so the CLI can call it
before anything allocates)."""

import os


def tune_allocator() -> bool:
    """Keep freed activation buffers in the process (glibc): by default every large tensor is mmap'ed
    and returned to the OS, which costs page faults on each layer of each forward (measured: about
    1.3x on a 512² network on CPU). Same effect as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=..., but
    applied at run time. Returns False where the C library is not glibc, or when FACERES_ALLOCATOR=system
    asks for glibc's defaults (they return memory to the OS sooner)."""
    if os.environ.get("FACERES_ALLOCATOR") == "system":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    return all(mallopt(param, value) == 1 for param, value in ((m_mmap_max, 0), (m_trim_threshold, 1 << 30), (m_top_pad, 256 << 20)))
