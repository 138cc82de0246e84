"""Keras networks, training, inference, Grad-CAM and the model folder.

TensorFlow enters only through :mod:`napari_dlbio.models._tf`, lazily.  Nothing here
imports napari or Qt.
"""
