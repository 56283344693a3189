"""VolumeGAN training (Xu et al., "3D-aware Image Synthesis via Learning Structural and Textural Representations",
CVPR 2022, arXiv 2112.10759) on the StyleGAN2 base.

genforce/volumegan ``runners/volumegan_runner.py`` trains with the StyleGAN2 losses of
``runners/losses/volumegan_loss.py``: G adversarial -> G path length (every 4 iterations, on the 12-entry w+
after style mixing) -> D fake + real -> D R1 (every 16 iterations) -> G EMA, Adam with the lazy ratios. Those are
the base's phases (:class:`~lightning_modules.stylegan2_ada.StyleGAN2ADAModule`) unchanged; this module adds what
the method adds:

- progressive growing (``runners/controllers/progress_scheduler.py``, ``--use_pg=true``): the level of detail is a
  host value computed from the images seen (:func:`pg_lod`), passed to every G call (``synthesis_inputs``) and D
  call (``discriminator_inputs``) as a Python float, stored in the ``lod`` buffers of G, G_ema and D (for
  checkpoints and tools) and in the run state (exact resume mid-transition); the Adam states of every optimiser
  are cleared when ``floor(lod)`` or ``ceil(lod)`` changes;
- every G call draws its own cameras from G's pose distribution (in the ``fake`` record's inputs);
- style mixing only among the renderer w's: cutoffs in ``G.mixing_range`` = [4, 12), so w_0..w_3 (volume and
  MLP) always come from the first latent (``VolumeGANGenerator.forward`` of the original);
- sample grids at fixed cameras, and a camera-orbit video of G_ema (``render.py``'s ``orbit``) written with every
  grid (``samples/orbit<kimg>.mp4`` + a frame grid), sent to loggers that take videos (W&B).

Lazy offsets: the original counts iterations from 1 and increments before the step, running path length at
``iter % 4 == 1``, R1 at ``iter % 16 == 1`` and the level-of-detail update at ``iter % 4 == 1``; the suite's
0-based iteration is ``iter - 1``, so ``iteration % k == 0`` is the same schedule, iteration for iteration, and the
level of detail is computed from the same ``seen_img`` (images before the step).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import av
import torch
from torch import nn

from datamodules.video_io import write_video
from lightning_modules.config import ConfigError, check_range, parse_block
from lightning_modules.gan import RealBatch
from lightning_modules.stylegan2_ada import StyleGAN2ADAModule
from networks.image_output import to_uint8
from networks.volume_rendering import camera_trajectory

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ProgressiveConfig:
    """``model.pg``: progressive growing (``ProgressScheduler`` of the original, configured in
    ``configs/volumegan_ffhq_config.py``): ``enabled`` (``--use_pg``; false = lod 0 throughout),
    ``training_kimg`` / ``transition_kimg`` per level (750 / 750), ``interval`` (update every k iterations,
    ``minibatch_repeats=4``), ``reset_optimizers`` (clear Adam states at level changes, ``reset_optimizer=True``)."""

    enabled: bool = True
    training_kimg: float = 750.0
    transition_kimg: float = 750.0
    interval: int = 4
    reset_optimizers: bool = True

    def __post_init__(self):
        check_range("model.pg.training_kimg", self.training_kimg, low=0)
        check_range("model.pg.transition_kimg", self.transition_kimg, low=0)
        check_range("model.pg.interval", self.interval, low=1)
        if self.enabled and self.training_kimg + self.transition_kimg <= 0:
            raise ConfigError("model.pg: training_kimg + transition_kimg must be > 0 when pg.enabled is true")


@dataclasses.dataclass
class VideoConfig:
    """``model.video``: the orbit video of G_ema written with every sample grid [D]. ``num`` first grid latents
    (0 = no video), ``frames`` per orbit at ``fps``; the camera moves as the original ``render.py`` ``orbit``
    (yaw ``yaw_range * sin``, pitch ``pitch_range * cos`` around the pose means, 0.4 / 0.2 rad [C]) and the
    latents are truncated with ``truncation_psi`` on the first ``truncation_cutoff`` w's (0.7 on 8 [C]);
    ``figure_columns`` frames of it also go into a PNG grid (rows = latents)."""

    num: int = 4
    frames: int = 24
    fps: int = 12
    yaw_range: float = 0.4
    pitch_range: float = 0.2
    truncation_psi: float = 0.7
    truncation_cutoff: int | None = 8
    figure_columns: int = 8

    def __post_init__(self):
        check_range("model.video.num", self.num, low=0)
        check_range("model.video.frames", self.frames, low=1)
        check_range("model.video.fps", self.fps, low=1)
        check_range("model.video.figure_columns", self.figure_columns, low=1)


def pg_lod(seen_img: int, max_lod: int, training_img: int, transition_img: int) -> float:
    """Level of detail after ``seen_img`` images (``ProgressScheduler.execute_before_iteration``):
    ``phase, r = divmod(seen_img, training + transition)``, ``lod = max_lod - phase - max(r - training, 0) /
    transition``, clamped at 0. Level ``k`` renders at ``img_resolution / 2^k``."""
    phase, rest = divmod(int(seen_img), int(training_img) + int(transition_img))
    lod = float(max_lod - phase)
    if transition_img:
        lod -= max(rest - training_img, 0) / transition_img
    return max(lod, 0.0)


class VolumeGANModule(StyleGAN2ADAModule):
    """VolumeGAN on the StyleGAN2-ADA base (phases Gmain, Greg, Dmain, Dreg).

    Args (besides :class:`~lightning_modules.stylegan2_ada.StyleGAN2ADAModule`'s):
        generator: :class:`networks.volumegan.VolumeGANGenerator`.
        discriminator: :class:`networks.volumegan.VolumeGANDiscriminator` with as many levels as G
            (``lod_resolution`` = G's ``nerf_resolution``).
        pg: ``model.pg`` (:class:`ProgressiveConfig`). video: ``model.video`` (:class:`VideoConfig`).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        pg: dict | None = None,
        video: dict | None = None,
        augment_pipe: nn.Module | None = None,
        ada: dict | None = None,
        augment_p: float = 0.0,
        batch_size: int = 64,
        total_kimg: float = 25000,
        lr: float = 0.002,
        d_lr: float | None = None,
        betas: tuple[float, float] = (0.0, 0.99),
        eps: float = 1e-8,
        r1_gamma: float = 10.0,
        pl_weight: float = 2.0,
        pl_decay: float = 0.01,
        pl_batch_shrink: int = 2,
        style_mixing_prob: float = 0.9,
        g_reg_interval: int | None = 4,
        d_reg_interval: int | None = 16,
        ema_kimg: float = 20.0,
        ema_rampup: float | None = None,
        seed: int = 0,
        sample_grid: tuple[int, int] = (4, 8),
        sample_every_kimg: float = 409.6,
        sample_truncation_psi: float = 1.0,
        init_from: str | None = None,
    ):
        for part in ("mixing_range", "set_lod", "sample_camera", "max_lod"):
            if not hasattr(generator, part):
                raise ConfigError(
                    "model.generator: VolumeGAN needs networks.volumegan.VolumeGANGenerator, "
                    f"got {type(generator).__name__} (no {part})"
                )
        if not (hasattr(discriminator, "set_lod") and hasattr(discriminator, "max_lod")):
            raise ConfigError(
                "model.discriminator: VolumeGAN needs networks.volumegan.VolumeGANDiscriminator, "
                f"got {type(discriminator).__name__}"
            )
        self.pg_cfg = parse_block("model.pg", ProgressiveConfig, pg)
        self.video_cfg = parse_block("model.video", VideoConfig, video)
        if self.pg_cfg.enabled and generator.max_lod != discriminator.max_lod:
            raise ConfigError(
                f"model.discriminator.lod_resolution: D has {discriminator.max_lod} progressive levels but G has "
                f"{generator.max_lod}; set lod_resolution to the generator's nerf_resolution"
            )
        super().__init__(
            generator,
            discriminator,
            augment_pipe=augment_pipe,
            ada=ada,
            augment_p=augment_p,
            batch_size=batch_size,
            total_kimg=total_kimg,
            lr=lr,
            d_lr=d_lr,
            betas=betas,
            eps=eps,
            r1_gamma=r1_gamma,
            pl_weight=pl_weight,
            pl_decay=pl_decay,
            pl_batch_shrink=pl_batch_shrink,
            style_mixing_prob=style_mixing_prob,
            g_reg_interval=g_reg_interval,
            d_reg_interval=d_reg_interval,
            ema_kimg=ema_kimg,
            ema_rampup=ema_rampup,
            seed=seed,
            sample_grid=sample_grid,
            sample_every_kimg=sample_every_kimg,
            sample_truncation_psi=sample_truncation_psi,
            init_from=init_from,
        )
        self.mixing_layers = tuple(generator.mixing_range)
        cameras = generator.sample_camera(len(self.grid_z), generator=torch.Generator().manual_seed(seed + 246813579))
        self.register_buffer("grid_yaw", cameras["yaw"], persistent=False)
        self.register_buffer("grid_pitch", cameras["pitch"], persistent=False)
        self.lod = self.scheduled_lod()
        self.set_networks_lod(self.lod)

    # ------------------------------------------------------------------ level of detail
    def scheduled_lod(self) -> float:
        """The schedule's level of detail at ``progress.seen_img`` (0 without progressive growing)."""
        cfg = self.pg_cfg
        if not cfg.enabled:
            return 0.0
        training, transition = round(cfg.training_kimg * 1000), round(cfg.transition_kimg * 1000)
        return pg_lod(self.progress.seen_img, self.G.max_lod, training, transition)

    def set_networks_lod(self, lod: float) -> None:
        """Write ``lod`` into the buffers of G, G_ema and D (read by tools and evaluation when no lod is passed)."""
        for net in (self.G, self.G_ema, self.D):
            net.set_lod(lod)

    def update_lod(self, lod: float) -> None:
        """Set the level of detail; when ``floor`` or ``ceil`` of it changes, clear every optimiser's state
        (``ProgressScheduler``: ``reset_optimizer``)."""
        old = self.lod
        level_change = math.floor(lod) != math.floor(old) or math.ceil(lod) != math.ceil(old)
        if level_change and self.pg_cfg.reset_optimizers:
            for name in self._optimizer_names:
                self.optimizer(name).optimizer.state.clear()
            log.info("lod %.4f -> %.4f at kimg %.1f: optimiser states cleared", old, lod, self.progress.kimg)
        self.lod = lod
        self.set_networks_lod(lod)

    def before_iteration(self, real: RealBatch) -> None:
        """Every ``pg.interval`` iterations (0-based 0, 4, 8, ... = the original's ``iter % 4 == 1``) the level of
        detail follows the images seen before this iteration."""
        if self.progress.iteration % self.pg_cfg.interval == 0:
            self.update_lod(self.scheduled_lod())

    def synthesis_inputs(self, z: torch.Tensor) -> dict:
        """Every G call: the current level of detail and cameras drawn from G's pose distribution (on the device)."""
        return {"lod": self.lod, "camera": self.G.sample_camera(z.shape[0], z.device)}

    def discriminator_inputs(self) -> dict:
        """Every D call (fakes, reals, R1; reals at full resolution): the current level of detail."""
        return {"lod": self.lod}

    def progress_stats(self) -> dict[str, float]:
        return {**super().progress_stats(), "progress/lod": self.lod}

    # ------------------------------------------------------------------------- figures
    def _fork_rng(self):
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    @torch.no_grad()
    def render_grid(self) -> torch.Tensor:
        """Fixed-latent G_ema samples at fixed cameras (drawn once from the pose distribution), no stratified jitter,
        constant noise; importance sampling from a seeded stream that leaves training's random state untouched."""
        z, yaw, pitch = (t.to(self.device) for t in (self.grid_z, self.grid_yaw, self.grid_pitch))
        c = torch.zeros([z.shape[0], self.G.c_dim], device=self.device)
        if self.grid_c is not None:
            c = self.grid_c.to(self.device)
        imgs = []
        with self._fork_rng():
            torch.manual_seed(self.hparams.seed + 987654321)
            for i in range(0, len(z), 16):
                part = slice(i, i + 16)
                camera = {"yaw": yaw[part], "pitch": pitch[part]}
                img = self.G_ema(
                    z[part],
                    c[part],
                    truncation_psi=self.hparams.sample_truncation_psi,
                    noise_mode="const",
                    camera=camera,
                    lod=self.lod,
                    perturb=False,
                )
                imgs.append(img)
        return to_uint8(torch.cat(imgs))

    @torch.no_grad()
    def render_orbit(self) -> torch.Tensor:
        """uint8 [frames, num, C, H, W]: G_ema's first ``video.num`` grid latents along the orbit (the same
        importance-sampling draws in every frame, constant noise, no jitter)."""
        cfg = self.video_cfg
        n = min(cfg.num, len(self.grid_z))
        z = self.grid_z[:n].to(self.device)
        c = torch.zeros([n, self.G.c_dim], device=self.device) if self.grid_c is None else self.grid_c[:n]
        ws = self.G_ema.mapping(
            z, c.to(self.device), truncation_psi=cfg.truncation_psi, truncation_cutoff=cfg.truncation_cutoff
        )
        pose = self.G_ema.synthesis.camera
        frames = []
        with self._fork_rng():
            for yaw, pitch in camera_trajectory(
                "orbit", pose["yaw_mean"], pose["pitch_mean"], cfg.yaw_range, cfg.pitch_range, cfg.frames
            ):
                torch.manual_seed(self.hparams.seed + 987654321)
                camera = {
                    "yaw": torch.full([n], yaw, device=self.device),
                    "pitch": torch.full([n], pitch, device=self.device),
                }
                img = self.G_ema.synthesis(ws, camera=camera, lod=self.lod, perturb=False, noise_mode="const")
                frames.append(to_uint8(img))
        return torch.stack(frames)

    def save_samples(self) -> None:
        """The base's sample grid, then (rank 0) the orbit: ``samples/orbit<kimg>.png`` (rows = latents, columns =
        frames) and ``samples/orbit<kimg>.mp4``, sent to every logger with ``log_image`` / ``log_video``."""
        super().save_samples()
        cfg = self.video_cfg
        if not self.trainer.is_global_zero or cfg.num <= 0:
            return
        frames = self.render_orbit()
        n_frames, n = frames.shape[:2]
        cols = min(cfg.figure_columns, n_frames)
        picks = [round(i * n_frames / cols) for i in range(cols)]
        figure = frames[picks].transpose(0, 1).flatten(0, 1)  # row = latent, column = frame
        kimg = self.progress.kimg
        caption = (
            f"kimg {kimg:.1f}, lod {self.lod:.2f}: G_ema orbit, yaw +-{cfg.yaw_range} pitch +-{cfg.pitch_range} rad"
        )
        png = self.write_figure("orbit", figure, (n, cols), caption)
        self.write_video("orbit", frames, png.with_suffix(".mp4"), caption)

    def write_video(self, name: str, frames: torch.Tensor, path: Path, caption: str) -> Path:
        """uint8 frames [T, N, C, H, W] side by side -> ``path`` (H.264 where PyAV has it, else MPEG-4 part 2),
        also sent to every logger with ``log_video`` (W&B)."""
        if frames.shape[2] == 1:
            frames = frames.expand(-1, -1, 3, -1, -1)
        tiled = frames[:, :, :3].permute(0, 3, 1, 4, 2).flatten(2, 3)  # [T, H, N * W, 3]
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        write_video(str(path), tiled.cpu().numpy(), fps=self.video_cfg.fps, codec=codec)
        for logger in self.loggers:
            if hasattr(logger, "log_video"):
                logger.log_video(key=f"samples/{name}", videos=[str(path)], caption=[caption])
        return path

    # ------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["run_state"]["lod"] = self.lod

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        lod = checkpoint["run_state"].get("lod")
        self.lod = self.scheduled_lod() if lod is None else float(lod)
