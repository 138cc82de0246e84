"""Pure numpy / scikit-image core: never imports napari, Qt, magicgui or TensorFlow."""
