"""Whole scenes: windowed coarse-to-fine registration with a local model, block-wise outputs, ``osreg apply``.

Data flow: :mod:`osreg.io.windows` (decimated and windowed reads) -> :mod:`osreg.scene.register` (global stage by
the core, tie points in windows by any matcher, :mod:`osreg.scene.model`) -> :mod:`osreg.scene.field` (the
displacement field) -> :mod:`osreg.scene.resample` and :mod:`osreg.scene.outputs` (COG, field, tie points, report).
"""

from osreg.scene.config import SCENE_MODELS, SceneConfig

SCENE_MIN_SIDE = 2048  # inputs with a longer side are registered as scenes by default


def is_scene(width: int, height: int) -> bool:
    """Whether an optical image is large enough to be registered as a scene by default."""
    return max(width, height) > SCENE_MIN_SIDE


def registered_as_scene(optical_path: str, model: str) -> bool:
    """The default of ``register``, ``match`` and ``batch``: a scene when the model is ``local`` (a scene model) or
    the optical image is large (:func:`is_scene`; only its size is read).

    Raises:
        RasterReadError: the optical file is missing or unreadable.
    """
    if model == "local":
        return True
    from osreg.io.windows import RasterSource

    src = RasterSource.open(optical_path, "optical")
    return is_scene(src.width, src.height)


__all__ = ["SCENE_MIN_SIDE", "SCENE_MODELS", "SceneConfig", "is_scene", "registered_as_scene"]
