"""napari dock widgets: Data & annotation, Train, Predict & inspect, Export.

Each widget only connects things: it copies arrays out of layers, builds a config from its
form, starts a background job (:mod:`._worker`) and turns the job's events into UI.  Model
code (and with it TensorFlow) is imported inside the jobs, never when a widget is imported.
"""
