"""The geometry-nodes groups and materials that animate and draw an imported result (bpy only).

"GVF4D Animation" moves every track with the scene frame, with no Python handler (so it renders in background
mode and on a farm): frame t of a track is a point attribute (`gvf_p_0004` position, `gvf_r_0004` rotation,
`gvf_s_0004` scale, `gvf_o_0004` opacity, `gvf_c_0004` SH-DC colour), the group builds the two names around the
scene frame (sub-frames included), reads them and blends linearly (rotations: spherically, the shortest way); a
track the file lacks keeps the canonical attribute (`rotation`, `scale`, `opacity`, `color`). Every frame's position
also carries the artist's edit of the point (its position minus the imported canonical one, `gvf_canonical_p`), so
points moved in edit mode stay moved as they animate. It writes the current values to the position and those
canonical names, so every later step and export sees the current frame. "GVF4D Animation (frame folder)" does
the same for a long shot whose tracks are not embedded but referenced: it loads the two frames around the scene
time from the result's frame folder (frame_cache.py) with Import PLY nodes.

"GVF4D Splat" draws a Gaussian as 3DGS rasterizers do: one quad per Gaussian facing the active camera, spanning
±3σ of its covariance projected on the plane perpendicular to the view ray, the material fading it with
opacity·exp(-½r²); the colour is the SH colour (bands 1-3 from the view direction when the file has them), a
display value the materials convert to scene-linear before emitting it. "GVF4D Points" draws each Gaussian as a
point of its colour.
"""
from __future__ import annotations

import bpy

from . import frame_cache

ANIMATION_GROUP = "GVF4D Animation"
REFERENCED_ANIMATION_GROUP = "GVF4D Animation (frame folder)"
SPLAT_GROUP = "GVF4D Splat"
POINTS_GROUP = "GVF4D Points"
SPLAT_MATERIAL = "GVF4D Splat Material"
POINTS_MATERIAL = "GVF4D Points Material"
VERSION = 5                # stored on each group and material: older builds are rebuilt in place
SPLAT_SIGMAS = 3.0         # the quad's half-size in standard deviations; the material's falloff matches it
POINT_RADIUS_SIGMAS = 1.5  # the points display's radius, in the Gaussian's mean standard deviation

# per-frame attribute prefixes: (prefix, canonical attribute, Named Attribute type)
TRACKS = {"position": ("gvf_p", None, "FLOAT_VECTOR"), "rotation": ("gvf_r", "rotation", "QUATERNION"),
          "scale": ("gvf_s", "scale", "FLOAT_VECTOR"), "opacity": ("gvf_o", "opacity", "FLOAT"),
          "color": ("gvf_c", "color", "FLOAT_VECTOR")}
SH_REST_ATTRIBUTE = "sh_rest_{:02d}"    # bands 1-3, coefficient k = 1..15, one FLOAT_VECTOR (rgb) each
CANONICAL_POSITION_ATTRIBUTE = "gvf_canonical_p"   # the canonical positions as imported (the base positions move)
FRAME_ROW_ATTRIBUTE = "gvf_row"         # a referenced import's point -> its Gaussian's row in the frame files
POINTS_COLOUR_ATTRIBUTE = "gvf_rgb"     # the points' colour: Cycles finds no point-cloud attribute named "color"

SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)


def track_attribute(track: str, t: int) -> str:
    """The point attribute holding frame t of a track, e.g. gvf_p_0004."""
    return f"{TRACKS[track][0]}_{t:04d}"


class NodeBuilder:
    """Adds nodes to a tree; each helper returns the output socket to link on. Inputs are given as sockets
    (linked) or constants (set), by input index or identifier."""

    def __init__(self, tree):
        self.tree = tree

    def add(self, kind: str, inputs=None, **props):
        n = self.tree.nodes.new(kind)
        for k, v in props.items():
            setattr(n, k, v)
        for key, value in (inputs or {}).items():
            self.set(self.input(n, key), value)
        return n

    @staticmethod
    def input(node, key):
        """A node's input by index, identifier or (first enabled one of that) name."""
        if isinstance(key, int):
            return node.inputs[key]
        found = ([s for s in node.inputs if s.identifier == key]
                 or [s for s in node.inputs if s.name == key and s.enabled])
        if not found:
            raise KeyError(f"{node.bl_idname} has no input {key!r}")
        return found[0]

    def set(self, socket, value) -> None:
        if isinstance(value, bpy.types.NodeSocket):
            self.tree.links.new(value, socket)
        else:
            socket.default_value = value

    def math(self, op: str, *args):
        return self.add("ShaderNodeMath", dict(enumerate(args)), operation=op).outputs[0]

    def vec(self, op: str, *args, scale=None):
        n = self.add("ShaderNodeVectorMath", dict(enumerate(args)), operation=op)
        if scale is not None:
            self.set(n.inputs["Scale"], scale)
        return n.outputs["Value" if op in ("DOT_PRODUCT", "LENGTH", "DISTANCE") else "Vector"]

    def xyz(self, vector):
        return self.add("ShaderNodeSeparateXYZ", {0: vector}).outputs

    def mix(self, data_type: str, factor, a, b):
        """Linear blend of floats or vectors; rotations: spherical (shortest path)."""
        kind = {"FLOAT": "Float", "VECTOR": "Vector", "ROTATION": "Rotation"}[data_type]
        return self.add("ShaderNodeMix", {"Factor_Float": factor, f"A_{kind}": a, f"B_{kind}": b},
                        data_type=data_type).outputs["Result"]

    def switch(self, input_type: str, condition, false, true):
        return self.add("GeometryNodeSwitch", {"Switch": condition, "False": false, "True": true},
                        input_type=input_type).outputs[0]

    def named(self, data_type: str, name):
        n = self.add("GeometryNodeInputNamedAttribute", {"Name": name}, data_type=data_type)
        return n.outputs["Attribute"], n.outputs["Exists"]

    def store(self, geometry, domain: str, data_type: str, name: str, value):
        return self.add("GeometryNodeStoreNamedAttribute", {"Geometry": geometry, "Name": name, "Value": value},
                        domain=domain, data_type=data_type).outputs[0]

    def srgb_to_linear(self, rgb):
        """Display (sRGB-encoded) rgb in [0, 1] -> scene-linear, the sRGB transfer function per channel."""
        low = self.vec("SCALE", rgb, scale=1 / 12.92)
        high = self.vec("POWER", self.vec("MULTIPLY_ADD", rgb, (1 / 1.055,) * 3, (0.055 / 1.055,) * 3), (2.4,) * 3)
        above = self.vec("MAXIMUM", self.vec("SIGN", self.vec("SUBTRACT", rgb, (0.04045,) * 3)), (0.0,) * 3)
        n = self.add("ShaderNodeMix", {"Factor_Vector": above, "A_Vector": low, "B_Vector": high},
                     data_type="VECTOR", factor_mode="NON_UNIFORM")
        return n.outputs["Result"]


def new_node_group(name: str, inputs=()):
    """A geometry-nodes group (Geometry in and out plus `inputs`: (name, socket type, default, min)), reused
    when this version already built it. A group of an older version (a .blend saved by an earlier add-on) is
    rebuilt in place: its nodes anew, its interface kept where it matches, so the modifiers that use it keep
    their input values (they hold them by socket identifier). -> (group, built: whether its nodes still have
    to be added)."""
    ng = bpy.data.node_groups.get(name)
    if ng is not None and ng.get("gvf4d_version") == VERSION:
        return ng, False
    if ng is None:
        ng = bpy.data.node_groups.new(name, "GeometryNodeTree")
    ng.nodes.clear()
    wanted = [("Geometry", "NodeSocketGeometry", "INPUT", None, None),
              *((n, t, "INPUT", default, minimum) for n, t, default, minimum in inputs),
              ("Geometry", "NodeSocketGeometry", "OUTPUT", None, None)]
    have = {(item.name, item.socket_type, item.in_out): item for item in ng.interface.items_tree
            if item.item_type == "SOCKET"}
    keys = [w[:3] for w in wanted]
    for key, item in have.items():
        if key not in keys:
            ng.interface.remove(item)
    for socket_name, socket_type, in_out, default, minimum in wanted:     # new sockets go last: Geometry stays first
        if (socket_name, socket_type, in_out) in have:
            continue
        s = ng.interface.new_socket(socket_name, in_out=in_out, socket_type=socket_type)
        if default is not None:
            s.default_value = default
            for modifier in _users(ng):        # they took the socket's value before its default was set
                set_group_input(modifier, socket_name, default)
        if minimum is not None:
            s.min_value = minimum
    ng["gvf4d_version"] = VERSION
    return ng, True


def _users(ng) -> list:
    """The geometry-nodes modifiers that use the group."""
    return [m for obj in bpy.data.objects for m in obj.modifiers if m.type == "NODES" and m.node_group == ng]


def _frames_around_scene_time(b: NodeBuilder, gin):
    """-> (t0, t1, w): the result frames before and after the scene frame (sub-frames included) and the weight of
    t1. Result frame t plays on scene frame Start + t * Step (the footage's stride); frames between blend. On a
    whole result frame t1 = t0, so nothing is read twice."""
    now = b.add("GeometryNodeInputSceneTime").outputs["Frame"]
    last = b.math("SUBTRACT", gin.outputs["Frames"], 1.0)
    elapsed = b.math("DIVIDE", b.math("SUBTRACT", now, gin.outputs["Start Frame"]), gin.outputs["Frame Step"])
    f = b.add("ShaderNodeClamp", {"Value": elapsed, "Min": 0.0, "Max": last}).outputs[0]
    t0, t1 = b.math("FLOOR", f), b.math("CEIL", f)
    return t0, t1, b.math("SUBTRACT", f, t0)


def _animate(b: NodeBuilder, gin, gout, frames_of, w) -> None:
    """Sets every track to its blend at weight w; frames_of(track) -> (value at t0, value at t1, whether the
    result has the track) as fields on the points."""
    g = gin.outputs[0]
    between = b.math("GREATER_THAN", w, 0.0)
    for track, (_, canonical, data_type) in TRACKS.items():
        a, c, exists = frames_of(track)
        socket_type = {"FLOAT_VECTOR": "VECTOR", "QUATERNION": "ROTATION", "FLOAT": "FLOAT"}[data_type]
        # a track the file lacks keeps the canonical value (Exists is evaluated on the geometry, as a field)
        current = (b.add("GeometryNodeInputPosition").outputs[0] if track == "position"
                   else b.named(data_type, canonical)[0])
        # on a whole result frame (playback) the second frame is neither read nor blended: the switch is lazy
        value = b.switch(socket_type, between, a, b.mix(socket_type, w, a, c))
        if track == "position":      # plus the point's edit (none for an import made before the attribute existed)
            imported, known = b.named("FLOAT_VECTOR", CANONICAL_POSITION_ATTRIBUTE)
            edit = b.switch("VECTOR", known, (0.0, 0.0, 0.0), b.vec("SUBTRACT", current, imported))
            value = b.vec("ADD", value, edit)
        value = b.switch(socket_type, exists, current, value)
        if track == "position":
            g = b.add("GeometryNodeSetPosition", {"Geometry": g, "Position": value}).outputs[0]
        else:
            g = b.store(g, "POINT", "FLOAT_COLOR" if track == "color" else data_type, canonical, value)
    g = b.add("GeometryNodeRemoveAttribute", {"Geometry": g, "Pattern Mode": "Wildcard", "Name": "gvf_*"}).outputs[0]
    b.tree.links.new(g, gout.inputs[0])


def track_attribute_name(b: NodeBuilder, track: str, t):
    """The name of the point attribute holding frame t (a socket) of an embedded track, e.g. gvf_p_0004."""
    name = b.add("FunctionNodeFormatString", {"Format": TRACKS[track][0] + "_{t:04}"})
    name.format_items.new("INT", "t")
    b.set(name.inputs["t"], t)
    return name.outputs[0]


def load_frame(b: NodeBuilder, folder, t):
    """The geometry of frame t (a socket) in a frame folder (frame_cache.py), loaded by an Import PLY node."""
    path = b.add("FunctionNodeFormatString", {"Format": "{folder}/" + frame_cache.FRAME_FILE_NODES})
    path.format_items.new("STRING", "folder")
    path.format_items.new("INT", "t")
    b.set(path.inputs["folder"], folder)
    b.set(path.inputs["t"], t)
    return b.add("GeometryNodeImportPLY", {"Path": path.outputs[0]}).outputs[0]


def frame_row(b: NodeBuilder):
    """Each point's row in the frame files (a field): its FRAME_ROW_ATTRIBUTE (points deleted or duplicated in
    edit mode keep their Gaussian's), else its index."""
    row, known = b.named("INT", FRAME_ROW_ATTRIBUTE)
    return b.switch("INT", known, b.add("GeometryNodeInputIndex").outputs[0], row)


def sample_by_index(b: NodeBuilder, geometry, data_type: str, value, row):
    """A field evaluated on a loaded frame (every Gaussian of the result, in order), read at `row` (frame_row)."""
    return b.add("GeometryNodeSampleIndex", {"Geometry": geometry, "Value": value, "Index": row},
                 data_type=data_type, domain="POINT").outputs[0]


def frame_position(b: NodeBuilder, t, folder=None):
    """Result frame t's positions (a field): the embedded attribute, or with `folder` (a socket) the frame
    folder's file."""
    if folder is None:
        return b.named("FLOAT_VECTOR", track_attribute_name(b, "position", t))[0]
    return sample_by_index(b, load_frame(b, folder, t), "FLOAT_VECTOR", b.add("GeometryNodeInputPosition").outputs[0],
                           frame_row(b))


ANIMATION_INPUTS = [("Start Frame", "NodeSocketInt", 1, None), ("Frames", "NodeSocketInt", 1, 1),
                    ("Frame Step", "NodeSocketInt", 1, 1)]


def animation_group():
    """Points in, points out: position and the canonical attributes set to the scene frame's values, read from
    the per-frame point attributes (tracks embedded in the .blend)."""
    ng, build = new_node_group(ANIMATION_GROUP, ANIMATION_INPUTS)
    if not build:
        return ng
    b = NodeBuilder(ng)
    gin, gout = b.add("NodeGroupInput"), b.add("NodeGroupOutput")
    t0, t1, w = _frames_around_scene_time(b, gin)

    def frames_of(track):
        data_type = TRACKS[track][2]
        (a, exists), (c, _) = (b.named(data_type, track_attribute_name(b, track, t)) for t in (t0, t1))
        return a, c, exists

    _animate(b, gin, gout, frames_of, w)
    return ng


def referenced_animation_group():
    """As `animation_group`, with the tracks read from the result's frame folder (frame_cache.py): the two frames
    around the scene time are loaded by Import PLY nodes (Blender caches what they load) and sampled by point
    index. "Has Rotation" etc. say which tracks the result has (the others keep the canonical attribute)."""
    has = [(f"Has {track.title()}", "NodeSocketBool", True, None) for track in TRACKS if track != "position"]
    ng, build = new_node_group(REFERENCED_ANIMATION_GROUP,
                               ANIMATION_INPUTS + [("Frame Folder", "NodeSocketString", "", None)] + has)
    if not build:
        return ng
    b = NodeBuilder(ng)
    gin, gout = b.add("NodeGroupInput"), b.add("NodeGroupOutput")
    t0, t1, w = _frames_around_scene_time(b, gin)
    loaded = [load_frame(b, gin.outputs["Frame Folder"], t) for t in (t0, t1)]
    row = frame_row(b)
    # a frame file that is missing loads no points: the splat then keeps its canonical values, not the origin
    points = b.add("GeometryNodeAttributeDomainSize", {"Geometry": loaded[0]}, component="MESH")
    present = b.math("GREATER_THAN", points.outputs["Point Count"], 0.0)

    def frame_value(track):
        """The track's value as a field on a loaded frame (quantised channels mapped back, frame_cache.dequantise)."""
        if track == "position":
            return b.add("GeometryNodeInputPosition").outputs[0]
        low, high, log = frame_cache.QUANTISED[track]
        channels = []
        for name in frame_cache.TRACK_PROPERTIES[track][1]:
            value = b.math("MULTIPLY_ADD", b.named("FLOAT", name)[0], (high - low) / frame_cache.STEPS, low)
            channels.append(b.math("EXPONENT", value) if log else value)
        if track == "opacity":
            return channels[0]
        if track == "rotation":
            return b.add("FunctionNodeQuaternionToRotation", dict(zip("WXYZ", channels))).outputs[0]
        return b.add("ShaderNodeCombineXYZ", dict(enumerate(channels))).outputs[0]

    def frames_of(track):
        data_type, value = TRACKS[track][2], frame_value(track)
        exists = present if track == "position" else b.add(      # the importer says which tracks the result has
            "FunctionNodeBooleanMath", {0: present, 1: gin.outputs[f"Has {track.title()}"]}, operation="AND").outputs[0]
        a, c = (sample_by_index(b, geometry, data_type, value, row) for geometry in loaded)
        return a, c, exists

    _animate(b, gin, gout, frames_of, w)
    return ng


def _sh_bands(b: NodeBuilder, ray):
    """Σ_k basis_k(ray) · sh_rest_k over bands 1-3 (3DGS's real SH basis and order); missing bands read as zero."""
    x, y, z = b.xyz(ray)
    xx, yy, zz = (b.math("MULTIPLY", c, c) for c in (x, y, z))
    xy, yz, xz = b.math("MULTIPLY", x, y), b.math("MULTIPLY", y, z), b.math("MULTIPLY", x, z)

    def poly(*terms):
        """Σ coefficient · product of factors."""
        total = None
        for coefficient, *factors in terms:
            value = coefficient
            for factor in factors:
                value = b.math("MULTIPLY", value, factor)
            total = value if total is None else b.math("ADD", total, value)
        return total

    basis = [
        poly((-SH_C1, y)), poly((SH_C1, z)), poly((-SH_C1, x)),
        poly((SH_C2[0], xy)), poly((SH_C2[1], yz)), poly((2 * SH_C2[2], zz), (-SH_C2[2], xx), (-SH_C2[2], yy)),
        poly((SH_C2[3], xz)), poly((SH_C2[4], xx), (-SH_C2[4], yy)),
        poly((3 * SH_C3[0], y, xx), (-SH_C3[0], y, yy)), poly((SH_C3[1], xy, z)),
        poly((4 * SH_C3[2], y, zz), (-SH_C3[2], y, xx), (-SH_C3[2], y, yy)),
        poly((2 * SH_C3[3], z, zz), (-3 * SH_C3[3], z, xx), (-3 * SH_C3[3], z, yy)),
        poly((4 * SH_C3[4], x, zz), (-SH_C3[4], x, xx), (-SH_C3[4], x, yy)),
        poly((SH_C3[5], z, xx), (-SH_C3[5], z, yy)), poly((SH_C3[6], x, xx), (-3 * SH_C3[6], x, yy)),
    ]
    total = None
    for k, value in enumerate(basis, start=1):
        term = b.vec("SCALE", b.named("FLOAT_VECTOR", SH_REST_ATTRIBUTE.format(k))[0], scale=value)
        total = term if total is None else b.vec("ADD", total, term)
    return total


def _linear_colour(b: NodeBuilder, rgb):
    """SH colour (display values) clamped to [0, 1], then scene-linear: what a material emits."""
    return b.srgb_to_linear(b.vec("MINIMUM", b.vec("MAXIMUM", rgb, (0.0,) * 3), (1.0,) * 3))


def splat_group():
    """Points in (with the current attributes), Gaussian quads out: the instance transform maps the quad
    [-1, 1]² to ±3σ of the covariance projected on the plane perpendicular to the view ray. Instances need no
    depth sort: EEVEE orders blended instances itself, Cycles composites any order."""
    ng, build = new_node_group(SPLAT_GROUP, [("View-dependent Colour", "NodeSocketBool", False, None)])
    if not build:
        return ng
    b = NodeBuilder(ng)
    gin, gout = b.add("NodeGroupInput"), b.add("NodeGroupOutput")
    camera = b.add("GeometryNodeObjectInfo", {"Object": b.add("GeometryNodeInputActiveCamera").outputs[0]},
                   transform_space="RELATIVE")
    eye = camera.outputs["Location"]                      # in the object's space, as the Gaussians
    centre = b.add("GeometryNodeInputPosition").outputs[0]  # a field: the point's, then the instance's position
    ray = b.vec("NORMALIZE", b.vec("SUBTRACT", centre, eye))

    seen = b.vec("ADD", b.named("FLOAT_VECTOR", "color")[0], _sh_bands(b, ray))
    g = b.switch("GEOMETRY", gin.outputs["View-dependent Colour"], gin.outputs[0],
                 b.store(gin.outputs[0], "POINT", "FLOAT_COLOR", "color", seen))
    g = b.add("GeometryNodeRemoveAttribute", {"Geometry": g, "Pattern Mode": "Wildcard",
                                              "Name": SH_REST_ATTRIBUTE.split("{")[0] + "*"}).outputs[0]
    quad = b.add("GeometryNodeMeshGrid", {"Size X": 2.0, "Size Y": 2.0, "Vertices X": 2, "Vertices Y": 2}).outputs[0]
    quad = b.store(quad, "CORNER", "FLOAT2", "gvf_uv", b.add("GeometryNodeInputPosition").outputs[0])
    quad = b.add("GeometryNodeSetMaterial", {"Geometry": quad, "Material": splat_material()}).outputs[0]
    instances = b.add("GeometryNodeInstanceOnPoints", {"Points": g, "Instance": quad}).outputs[0]

    # u, v: an orthonormal basis of the plane perpendicular to the ray (u along the camera's right)
    up = b.add("FunctionNodeRotateVector", {"Vector": (0.0, 1.0, 0.0),
                                            "Rotation": camera.outputs["Rotation"]}).outputs[0]
    u = b.vec("NORMALIZE", b.vec("CROSS_PRODUCT", ray, up))
    v = b.vec("CROSS_PRODUCT", u, ray)
    # M = [u v]ᵀ R S² Rᵀ [u v]: with u, v in the Gaussian's local frame scaled by S, M's entries are dot products
    to_local = b.add("FunctionNodeInvertRotation", {"Rotation": b.named("QUATERNION", "rotation")[0]}).outputs[0]
    scale = b.named("FLOAT_VECTOR", "scale")[0]
    us, vs = (b.vec("MULTIPLY", b.add("FunctionNodeRotateVector", {"Vector": e, "Rotation": to_local}).outputs[0],
                    scale) for e in (u, v))
    m00, m01, m11 = b.vec("DOT_PRODUCT", us, us), b.vec("DOT_PRODUCT", us, vs), b.vec("DOT_PRODUCT", vs, vs)
    # its Cholesky factor [[a, 0], [c01, c11]]
    a = b.math("SQRT", b.math("MAXIMUM", m00, 1e-20))
    c01 = b.math("DIVIDE", m01, a)
    c11 = b.math("SQRT", b.math("MAXIMUM", b.math("SUBTRACT", m11, b.math("MULTIPLY", c01, c01)), 1e-20))
    k = SPLAT_SIGMAS
    columns = (b.vec("ADD", b.vec("SCALE", u, scale=b.math("MULTIPLY", a, k)),
                     b.vec("SCALE", v, scale=b.math("MULTIPLY", c01, k))),
               b.vec("SCALE", v, scale=b.math("MULTIPLY", c11, k)), b.vec("SCALE", ray, scale=-1.0), centre)
    matrix = b.add("FunctionNodeCombineMatrix")
    for col, vector in enumerate(columns):
        for row, component in enumerate(b.xyz(vector)):
            b.set(matrix.inputs[4 * col + row], component)
        matrix.inputs[4 * col + 3].default_value = 1.0 if col == 3 else 0.0
    g = b.add("GeometryNodeSetInstanceTransform", {"Instances": instances, "Transform": matrix.outputs[0]}).outputs[0]
    b.tree.links.new(g, gout.inputs[0])
    return ng


def points_group():
    """Points in, a point cloud out (radius from the Gaussian's scale) with the splat's colour: renders in
    Cycles and EEVEE."""
    ng, build = new_node_group(POINTS_GROUP)
    if not build:
        return ng
    b = NodeBuilder(ng)
    gin, gout = b.add("NodeGroupInput"), b.add("NodeGroupOutput")
    radius = b.vec("DOT_PRODUCT", b.named("FLOAT_VECTOR", "scale")[0], (POINT_RADIUS_SIGMAS / 3,) * 3)
    g = b.store(gin.outputs[0], "POINT", "FLOAT_VECTOR", POINTS_COLOUR_ATTRIBUTE, b.named("FLOAT_VECTOR", "color")[0])
    g = b.add("GeometryNodeMeshToPoints", {"Mesh": g, "Radius": radius}).outputs[0]
    g = b.add("GeometryNodeSetMaterial", {"Geometry": g, "Material": points_material()}).outputs[0]
    b.tree.links.new(g, gout.inputs[0])
    return ng


def _new_material(name: str):
    """An emptied node-based material, reused when this version already built it. -> (material, build)."""
    mat = bpy.data.materials.get(name)
    if mat is not None and mat.get("gvf4d_version") == VERSION:
        return mat, False
    mat = mat or bpy.data.materials.new(name)
    if mat.node_tree is None:     # Blender 4.x materials need use_nodes switched on; 5.x always have a tree
        mat.use_nodes = True
    mat.node_tree.nodes.clear()
    mat["gvf4d_version"] = VERSION
    mat.surface_render_method = "BLENDED"
    mat.use_transparency_overlap = True
    mat.use_backface_culling = False
    mat.cycles.emission_sampling = "NONE"   # the splats are seen, not lights: keep them out of light sampling
    return mat, True


def _emission_over_transparent(b: NodeBuilder, colour, alpha):
    emit = b.add("ShaderNodeEmission", {"Color": colour, "Strength": 1.0}).outputs[0]
    transparent = b.add("ShaderNodeBsdfTransparent").outputs[0]
    mix = b.add("ShaderNodeMixShader", {0: alpha, 1: transparent, 2: emit}).outputs[0]
    b.tree.links.new(mix, b.add("ShaderNodeOutputMaterial").inputs["Surface"])


def splat_material():
    """Emission of the instance's linear colour over transparency, alpha = opacity·exp(-½r²), r in σ from the
    quad's [-1, 1]² coordinates."""
    mat, build = _new_material(SPLAT_MATERIAL)
    if build:
        b = NodeBuilder(mat.node_tree)
        uv = b.add("ShaderNodeAttribute", attribute_name="gvf_uv", attribute_type="GEOMETRY").outputs["Vector"]
        r2 = b.vec("DOT_PRODUCT", uv, uv)
        falloff = b.math("EXPONENT", b.math("MULTIPLY", r2, -0.5 * SPLAT_SIGMAS ** 2))
        opacity = b.add("ShaderNodeAttribute", attribute_name="opacity", attribute_type="INSTANCER").outputs["Fac"]
        colour = b.add("ShaderNodeAttribute", attribute_name="color", attribute_type="INSTANCER").outputs["Color"]
        _emission_over_transparent(b, _linear_colour(b, colour), b.math("MULTIPLY", falloff, opacity))
    return mat


def points_material():
    mat, build = _new_material(POINTS_MATERIAL)
    if build:
        b = NodeBuilder(mat.node_tree)
        opacity = b.add("ShaderNodeAttribute", attribute_name="opacity", attribute_type="GEOMETRY").outputs["Fac"]
        colour = b.add("ShaderNodeAttribute", attribute_name=POINTS_COLOUR_ATTRIBUTE,
                       attribute_type="GEOMETRY").outputs["Color"]
        _emission_over_transparent(b, _linear_colour(b, colour), opacity)
    return mat


def _group_input_identifier(modifier, name: str) -> str:
    for item in modifier.node_group.interface.items_tree:
        if item.item_type == "SOCKET" and item.in_out == "INPUT" and item.name == name:
            return item.identifier
    raise KeyError(f"{modifier.node_group.name} has no input {name!r}")


def group_input(modifier, name: str):
    """A geometry-nodes modifier's input value by its name. Blender 5.2 holds the inputs as RNA properties in
    `modifier.properties.inputs`; earlier versions as ID properties of the modifier."""
    identifier = _group_input_identifier(modifier, name)
    if hasattr(modifier, "properties"):
        return getattr(modifier.properties.inputs, identifier).value
    return modifier[identifier]


def set_group_input(modifier, name: str, value) -> None:
    """Sets a geometry-nodes modifier's input by its name (see `group_input`)."""
    identifier = _group_input_identifier(modifier, name)
    if hasattr(modifier, "properties"):
        getattr(modifier.properties.inputs, identifier).value = value
    else:
        modifier[identifier] = value
