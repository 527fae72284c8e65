"""Render one frame of a glTF 2.0 binary (.glb) to a PNG with Blender's own glTF importer.

Headless usage (Debian 12: apt-get install --no-install-recommends blender python3-numpy):

    blender -b --factory-startup --python-exit-code 2 \
        --python docs/tools/render_glb.py -- IN.glb OUT.png [FRAME] [WxH] \
        [--time SECONDS] [--animation NAME] [--engine CYCLES|BLENDER_WORKBENCH|BLENDER_EEVEE] \
        [--samples N]

FRAME is a Blender frame: glTF time t seconds is frame t*24 (the importer keys at the
scene fps, 24), so glTF time 0 is frame 0. Default: middle of the active animation
(the glTF file's first animation unless --animation picks another). --time overrides FRAME.
WxH defaults to 960x960 (a single number N means NxN).

Camera: looks at the glTF front (+Z in glTF = -Y in Blender after the importer's Y-up to
Z-up conversion) from slightly above, framing the posed (evaluated) meshes at that frame.
Default engine is Cycles on the CPU (works without display or GPU). Workbench/EEVEE need
an OpenGL context, i.e. `xvfb-run -a blender -b ...` on a machine without a display.
Exit status: 0 on success, 1 on bad arguments / failed import / nothing to render / failed render.
"""

import argparse
import math
import os
import sys

import bpy
from mathutils import Euler, Vector


def fail(msg):
    print("render_glb: ERROR: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="render_glb.py", description="Render a .glb frame to PNG")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("frame", nargs="?", type=float, default=None)
    p.add_argument("resolution", nargs="?", default="960x960")
    p.add_argument("--time", type=float, default=None, help="glTF time in seconds")
    p.add_argument("--animation", default=None, help="glTF animation name (default: first)")
    p.add_argument("--engine", default="CYCLES",
                   choices=["CYCLES", "BLENDER_WORKBENCH", "BLENDER_EEVEE"])
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--elevation", type=float, default=15.0, help="camera pitch, degrees above horizontal")
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        fail("bad arguments (%s)" % e.code) if e.code else sys.exit(0)
    try:
        if "x" in a.resolution.lower():
            w, h = (int(v) for v in a.resolution.lower().split("x"))
        else:
            w = h = int(a.resolution)
    except ValueError:
        fail("resolution must be WxH or N, got %r" % a.resolution)
    a.width, a.height = w, h
    return a


def animated_ids():
    """Every datablock with animation data (objects and shape keys)."""
    ids = [o for o in bpy.data.objects if o.animation_data]
    ids += [k for k in bpy.data.shape_keys if k.animation_data]
    return ids


def select_animation(name):
    found = False
    for idb in animated_ids():
        ad = idb.animation_data
        track = next((t for t in ad.nla_tracks if t.name == name and t.strips), None)
        ad.action = track.strips[0].action if track else None
        found = found or track is not None
    if not found:
        names = sorted({t.name for i in animated_ids() for t in i.animation_data.nla_tracks})
        fail("animation %r not found; available: %s" % (name, names))


def action_range():
    lo, hi = None, None
    for idb in animated_ids():
        act = idb.animation_data.action
        if act is None:
            continue
        s, e = act.frame_range
        lo = s if lo is None else min(lo, s)
        hi = e if hi is None else max(hi, e)
    return lo, hi


def world_bbox(depsgraph, meshes):
    lo = Vector((math.inf,) * 3)
    hi = Vector((-math.inf,) * 3)
    n = 0
    for obj in meshes:
        ev = obj.evaluated_get(depsgraph)
        me = ev.to_mesh()
        mw = ev.matrix_world
        for v in me.vertices:
            co = mw @ v.co
            lo = Vector(map(min, lo, co))
            hi = Vector(map(max, hi, co))
            n += 1
        ev.to_mesh_clear()
    return (lo, hi) if n else (None, None)


def make_material(name, rgb, roughness=0.8):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    mat.diffuse_color = (*rgb, 1.0)  # used by Workbench
    return mat


def main():
    a = parse_args()
    src = os.path.abspath(a.input)
    out = os.path.abspath(a.output)
    if not os.path.isfile(src):
        fail("input file not found: %s" % src)

    # Empty scene (keeps the default-enabled add-ons, incl. io_scene_gltf2).
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene

    # Debian 12's Blender 3.4.1 glTF importer calls np.bool, which NumPy >= 1.24
    # (Debian 12 ships 1.24.2) removed. Restore the alias in this process only.
    try:
        import numpy as np
    except ImportError:
        fail("numpy is missing; the glTF add-on needs it (apt-get install python3-numpy)")
    if "bool" not in np.__dict__:
        np.bool = bool
    if not hasattr(bpy.ops.import_scene, "gltf"):
        fail("Blender glTF importer (io_scene_gltf2) is not available")

    try:
        res = bpy.ops.import_scene.gltf(filepath=src)
    except Exception as e:  # importer reports errors as RuntimeError
        fail("glTF import failed for %s: %s" % (src, e))
    if "FINISHED" not in res:
        fail("glTF import failed for %s: operator returned %s" % (src, res))

    meshes = [o for o in scene.objects if o.type == "MESH"]
    if not meshes:
        fail("import of %s produced no mesh objects" % src)

    if a.animation:
        select_animation(a.animation)
    lo_f, hi_f = action_range()
    if a.time is not None:
        frame = a.time * scene.render.fps / scene.render.fps_base
    elif a.frame is not None:
        frame = a.frame
    elif lo_f is not None:
        frame = 0.5 * (lo_f + hi_f)
    else:
        frame = 0.0
    scene.frame_set(int(math.floor(frame)), subframe=frame - math.floor(frame))
    print("render_glb: %d mesh object(s), animation frames %s..%s, rendering frame %g (t=%.4gs)"
          % (len(meshes), lo_f, hi_f, frame, frame * scene.render.fps_base / scene.render.fps),
          flush=True)

    depsgraph = bpy.context.evaluated_depsgraph_get()
    lo, hi = world_bbox(depsgraph, meshes)
    if lo is None:
        fail("imported meshes have no vertices")
    center = (lo + hi) / 2
    size = max((hi - lo).length, 1e-4)
    print("render_glb: posed bbox min %s max %s" % (tuple(round(v, 4) for v in lo),
                                                    tuple(round(v, 4) for v in hi)), flush=True)

    # Floor: light grey plane just under the lowest point.
    bpy.ops.mesh.primitive_plane_add(size=size * 20, location=(center.x, center.y, lo.z - size * 1e-3))
    floor = bpy.context.object
    floor.name = "render_glb_floor"
    floor.data.materials.append(make_material("render_glb_floor", (0.5, 0.5, 0.5)))

    # Sun from front-left-above (front = -Y in Blender).
    sun_data = bpy.data.lights.new("render_glb_sun", type="SUN")
    sun_data.energy = 3.0
    sun_data.angle = math.radians(5)
    sun = bpy.data.objects.new("render_glb_sun", sun_data)
    sun.rotation_euler = Euler((math.radians(40), 0, math.radians(-30)), "XYZ")
    scene.collection.objects.link(sun)

    # Soft grey world for fill light and background.
    world = bpy.data.worlds.new("render_glb_world")
    world.use_nodes = True
    bg = world.node_tree.nodes.get("Background")
    bg.inputs["Color"].default_value = (0.6, 0.6, 0.6, 1.0)
    bg.inputs["Strength"].default_value = 0.5
    world.color = (0.6, 0.6, 0.6)
    scene.world = world

    # Camera: looking along +Y (at the glTF front), pitched down by `elevation`.
    cam_data = bpy.data.cameras.new("render_glb_cam")
    cam_data.lens = 50
    cam_data.clip_start = size * 1e-3
    cam_data.clip_end = size * 1e3
    cam = bpy.data.objects.new("render_glb_cam", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.rotation_euler = Euler((math.radians(90 - a.elevation), 0, 0), "XYZ")

    scene.render.resolution_x = a.width
    scene.render.resolution_y = a.height
    scene.render.resolution_percentage = 100
    cam_data.sensor_fit = "AUTO"

    corners = [Vector((x, y, z)) for x in (lo.x, hi.x) for y in (lo.y, hi.y) for z in (lo.z, hi.z)]
    bpy.context.view_layer.update()
    flat = [c for v in corners for c in v]
    loc, _scale = cam.camera_fit_coords(bpy.context.evaluated_depsgraph_get(), flat)
    cam.location = loc
    cam_data.lens = cam_data.lens / 1.15  # ~15% margin around the fitted bbox

    # Render settings.
    scene.render.engine = a.engine
    if a.engine == "CYCLES":
        scene.cycles.device = "CPU"
        scene.cycles.samples = a.samples
        scene.cycles.use_denoising = False
        scene.cycles.max_bounces = 4
    elif a.engine == "BLENDER_EEVEE":
        scene.eevee.taa_render_samples = a.samples
    elif a.engine == "BLENDER_WORKBENCH":
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "MATERIAL"
        scene.display.shading.show_shadows = True
    # 'Standard' keeps base colours as authored (Filmic, the 3.x default, washes them out).
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.filepath = out
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)

    try:
        bpy.ops.render.render(write_still=True)
    except Exception as e:
        fail("render failed: %s" % e)
    if not os.path.isfile(out):
        fail("render produced no file at %s" % out)
    print("render_glb: wrote %s (%dx%d, %s)" % (out, a.width, a.height, a.engine), flush=True)


if __name__ == "__main__":
    main()
