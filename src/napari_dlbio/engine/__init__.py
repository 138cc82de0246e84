"""The engine: one process that owns TensorFlow and every loaded model.

Widgets and ``dlbio ... --engine`` send it typed requests (:mod:`.protocol`) and receive
the core's typed events back, as the job generators of the models package yield them.  The
engine runs as a child of napari (:class:`~.local.LocalEngine`, big arrays through shared
memory) or as a server on another machine (``dlbio engine --listen``, big arrays streamed in
chunks over an authenticated socket).  Importing this package never imports TensorFlow,
napari or Qt: only the engine's handlers load the models package, inside the engine.
"""
