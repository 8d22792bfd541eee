"""Pictures of MPC episodes: the arena, the executed path, and what every plan intended;
and of the energy landscape a world model gives the planner.

The planned paths are the true rollouts of the planned actions from where each plan was
made, so a plan that runs into a wall is drawn stopping at it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from jepalab.envs.two_rooms import TwoRooms
from jepalab.planning.mpc import EpisodeResult

EXECUTED = (40, 110, 255, 255)  # blue
PLANNED = (255, 140, 0, 90)  # translucent orange
START = (40, 200, 60, 255)  # green
GOAL = (230, 40, 40, 255)  # red


def _to_canvas(points: np.ndarray, scale: int) -> list[tuple[float, float]]:
    """Pixel coordinates ``(N, 2)`` (centres at integers) -> upscaled canvas coordinates."""
    return [((x + 0.5) * scale, (y + 0.5) * scale) for x, y in np.asarray(points)]


def planned_path(
    world: TwoRooms, position: np.ndarray, actions: np.ndarray, action_repeat: int
) -> np.ndarray:
    """``(H * action_repeat + 1, 2)`` positions the true dynamics visit executing a plan."""
    steps = np.repeat(np.asarray(actions) / action_repeat, action_repeat, axis=0)
    return world.rollout(position, steps)


def _background(world: TwoRooms, position: np.ndarray, scale: int) -> Image.Image:
    frame = world.render(position)
    return (
        Image.fromarray(frame)
        .resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
        .convert("RGBA")
    )


def _draw_marker(
    draw: ImageDraw.ImageDraw,
    point: np.ndarray,
    radius: float,
    color,
    scale: int,
    fill: bool = True,
) -> None:
    ((cx, cy),) = _to_canvas(point[None], scale)
    r = radius * scale
    box = (cx - r, cy - r, cx + r, cy + r)
    if fill:
        draw.ellipse(box, fill=color)
    else:
        draw.ellipse(box, outline=color, width=max(1, scale // 3))


def episode_image(
    world: TwoRooms,
    result: EpisodeResult,
    scale: int = 6,
    upto: int | None = None,
    show_plans: bool = True,
) -> Image.Image:
    """RGB picture of ``result`` (its first ``upto`` steps if given), ``64 * scale`` square."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    positions = result.positions if upto is None else result.positions[: upto + 1]
    image = _background(world, positions[-1] if upto is not None else result.start, scale)
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    if show_plans:
        for position, actions in result.plans:
            path = planned_path(world, position, actions, result.action_repeat)
            draw.line(_to_canvas(path, scale), fill=PLANNED, width=max(1, scale // 3))
    image = Image.alpha_composite(image, overlay)
    draw = ImageDraw.Draw(image)
    if len(positions) > 1:
        draw.line(_to_canvas(positions, scale), fill=EXECUTED, width=max(1, scale // 2))
    _draw_marker(draw, result.goal, world.config.success_radius, GOAL, scale, fill=False)
    _draw_marker(draw, result.goal, 1.0, GOAL, scale)
    _draw_marker(draw, result.start, 1.0, START, scale)
    return image.convert("RGB")


def save_episode_picture(
    path: str | Path, world: TwoRooms, result: EpisodeResult, scale: int = 6
) -> Path:
    """Write a PNG of the episode: arena (rendered at the start), executed path (blue),
    every replanning step's plan (translucent orange), start (green), goal (red) with the
    success radius. Returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    episode_image(world, result, scale).save(path, format="PNG")
    return path


def save_episode_gif(
    path: str | Path,
    world: TwoRooms,
    result: EpisodeResult,
    scale: int = 4,
    every: int = 1,
    frame_ms: int = 60,
) -> Path:
    """Write an animated GIF: the agent (rendered) and its path so far, one frame per
    ``every`` environment steps. Returns the path written."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = list(range(0, result.steps + 1, every))
    if steps[-1] != result.steps:
        steps.append(result.steps)
    frames = [episode_image(world, result, scale, upto=t, show_plans=False) for t in steps]
    frames[0].save(
        path, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0
    )
    return path


def landscape_image(
    world: TwoRooms,
    distances: np.ndarray,
    goal: np.ndarray,
    result: EpisodeResult | None = None,
    scale: int = 6,
) -> Image.Image:
    """RGB picture of an energy landscape (e.g.
    :func:`~jepalab.planning.world_model.latent_distance_map`): ``(H, W)`` values in viridis
    (low: dark), walls grey, the goal in red with its success radius, and optionally the
    executed path of ``result`` (white) from its start (green)."""
    from matplotlib import colormaps  # matplotlib is only needed for this picture

    if distances.shape != (world.config.img_size,) * 2:
        raise ValueError(
            f"distances must be ({world.config.img_size}, {world.config.img_size}), got "
            f"{distances.shape}"
        )
    free = np.isfinite(distances)
    if not free.any():
        raise ValueError("distances has no finite value")
    lo, hi = np.nanmin(distances), np.nanmax(distances)
    scaled = np.where(free, (distances - lo) / max(hi - lo, 1e-12), 0.0)
    rgb = (colormaps["viridis"](scaled)[..., :3] * 255).astype(np.uint8)
    rgb[~free] = 128
    image = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    if result is not None and len(result.positions) > 1:
        draw.line(
            _to_canvas(result.positions, scale), fill=(255, 255, 255), width=max(1, scale // 2)
        )
        _draw_marker(draw, result.start, 1.0, START[:3], scale)
    goal = np.asarray(goal, dtype=np.float64)
    _draw_marker(draw, goal, world.config.success_radius, GOAL[:3], scale, fill=False)
    _draw_marker(draw, goal, 1.0, GOAL[:3], scale)
    return image


def save_landscape_picture(
    path: str | Path,
    world: TwoRooms,
    distances: np.ndarray,
    goal: np.ndarray,
    result: EpisodeResult | None = None,
    scale: int = 6,
) -> Path:
    """Write :func:`landscape_image` as a PNG; returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    landscape_image(world, distances, goal, result, scale).save(path, format="PNG")
    return path
