"""GVF4D for Blender: footage of a moving object -> animated 3D Gaussian splat (canonical splat + variation field).

The panel, operators and importers arrive with the add-on issue; this package already holds the reader of
the backend's .gvf4d results (result_file.py), which needs only numpy.
"""


def register():
    pass


def unregister():
    pass
