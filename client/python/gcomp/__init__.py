"""gcomp: adaptive gradient compression as a service, Python bindings.

ctypes bindings over libgcomp-client (no compiled extension). The trainer API is
:class:`Client`, :class:`Bucket` and :class:`Error`; :class:`Status` lists the status
codes of gcomp.h. The PyTorch integration (DDP hook, DistributedOptimizer,
broadcast_parameters) is :mod:`gcomp.torch`. The launcher (``gcomp-run``) lives in
:mod:`gcomp.launch`, the trace replay driver (``gcomp-replay``) in :mod:`gcomp.replay`
and the plots (``gcomp-plot``) in :mod:`gcomp.plot`.

The shared library is found through ``$GCOMP_LIBRARY``, the path meson recorded at
install time, ``$GCOMP_BUILD_DIR/client``, or the system library path (see
:mod:`gcomp._lib`); it is loaded when the first Client is made.
"""

from ._lib import MAX_DIMS, MAX_LAYERS, MAX_NAME, Status
from .client import Bucket, Client, Error

__all__ = ["Bucket", "Client", "Error", "Status", "MAX_DIMS", "MAX_LAYERS", "MAX_NAME"]
__version__ = "0.1.0"
