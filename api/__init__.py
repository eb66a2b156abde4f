"""The HTTP API and the `opsledger` command line."""

import os

# Before numpy loads (the console script imports this package first): the server answers many
# requests at once, and BLAS threads inside one small fit only spin against each other and
# the other requests. Measured on the demo's 60 PVCs: a forecast of all of them took 2.4 s
# with OpenBLAS's default threads, 1.1 s with one. An operator's own setting wins.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
