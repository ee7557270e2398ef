"""Developer tools and experiment orchestration, beside the library and not part of it (not in the wheel).
Run from the repository's root:

    python -m tools.asm [--help]     the CPU kernels' x86-64 hot loops: vector width, accumulators, spills
    python -m tools.sass [--help]    the Triton kernels compiled for sm_90 (no GPU needed): spills, hot loop
    tools/study.py                   resumable studies (lists of runs whose small records are kept in git),
                                     used by the study scripts in scripts/
"""
