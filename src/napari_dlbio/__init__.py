"""napari-dlbio: train, fine-tune and inspect deep networks on bioimages in napari.

Importing this package is cheap: it never imports napari's viewer, Qt or TensorFlow.
"""

__version__ = "0.1.0"
