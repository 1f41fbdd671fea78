"""Procedural CARLA-like street scenes, so the demo and the tests need no downloaded data.

A scene is a small 3-D world (a straight or gently curving road, what lies beside it, what stands on
it) seen by a pinhole camera at driver height. Every shape is drawn into the image and into the mask
by the same call, far to near, so the mask is exact wherever the image shows the shape. Colour,
texture, light, haze, shadows, blur and noise vary from drive to drive, and the colours of different
classes overlap on purpose, so that segmenting a frame needs shape and texture, not a colour lookup.

Class ids are CARLA's semantic tags (``classes.CARLA``); files are written in CARLA's format: RGBA
PNGs, the class id in the mask's red channel.

One module per thing drawn (buildings, barriers, trees, furniture, road_users, sky) on top of the
palette and the canvas; scene plans a drive, render draws its frames, writer saves them.
"""

from .render import render_drive, render_scene
from .writer import write_dataset

__all__ = ["render_drive", "render_scene", "write_dataset"]
