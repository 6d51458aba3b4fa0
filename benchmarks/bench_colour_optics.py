"""Issue 4's benchmark: colour conversions and optics, 3840x2160, ratios in one run.

Runs ``bench_colour.py`` (sRGB→Oklab and sRGB→Jzazbz against colour-science, goal ≥ 10× faster
at the tested accuracy) and ``bench_optics.py`` (Richardson–Lucy 30 iterations against skimage,
PSF 3D stack against microscpsf-py).  ``--quick`` runs optics at 1920x1080.

    python benchmarks/bench_colour_optics.py [--quick]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_colour  # noqa: E402
import bench_optics  # noqa: E402

if __name__ == "__main__":
    print("=== colour ===")
    bench_colour.main()
    print("\n=== optics ===")
    bench_optics.main()
