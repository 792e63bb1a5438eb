"""What a warm gvf engine keeps on the GPU between shots: the CUDA graphs of one-window calls, never the batched
conditioning of a long shot's windows (pipelines/gvf.py, docs/long_shots.md)."""
import pytest
import torch

from gvf4d.models.gvf_dit import GVFDiT, GVFDiTConfig
from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig
from gvf4d.pipelines.gvf import GVFEngine, GVFSettings, identity_stats
from gvf4d.pipelines.model_registry import release_gpu_memory
from gvf4d.representations.gvf_gaussians import GVFGaussians
from gvf4d.synthetic import make_synthetic_shot

WINDOW = 8          # the motion VAE's clip length: frames per window
IMAGE_TOKENS = 300  # frame-feature tokens per frame


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_long_shot_leaves_the_warm_engine_holding_one_windows_graphs():
    """A one-window shot keeps its graph (with its copy of the window's conditioning); a 64-frame shot, its 11
    windows in one DiT call, leaves nothing more behind once the job's memory is released."""
    torch.manual_seed(0)
    dit_config = GVFDiTConfig(resolution=64, model_channels=256, num_blocks=4, num_heads=4, image_cond_channels=64)
    dit = GVFDiT(dit_config)
    vae = MotionVAE(MotionVAEConfig(depth=1, dim=48, queries_dim=48, num_inputs=128, num_latents=64, heads=4,
                                    num_timesteps=WINDOW))
    for p in [*dit.parameters(), *vae.parameters()]:
        torch.nn.init.normal_(p, std=0.02)
    engine = GVFEngine(dit, vae, identity_stats()).to("cuda")
    canonical = GVFGaussians.from_gaussians(make_synthetic_shot(num_frames=2, gaussians_per_part=40, seed=3)
                                            .animated.canonical)
    gen = torch.Generator().manual_seed(0)

    def held_after(frames: int, **settings) -> tuple[int, dict | None]:
        features = torch.randn(frames, IMAGE_TOKENS, dit_config.image_cond_channels, generator=gen)
        run = engine.run(canonical, features, GVFSettings(method="multistep", steps=3, **settings))
        assert run.animated.positions.shape[0] == frames
        windows = run.windows
        del run                                           # the job's outputs; the engine's own state stays
        release_gpu_memory()
        return torch.cuda.memory_allocated(), windows

    eager, _ = held_after(WINDOW, cuda_graphs=False)      # half-precision weights, no graph
    short, _ = held_after(WINDOW)
    long, windows = held_after(64)
    short_again, _ = held_after(WINDOW)
    conditioning = dit_config.num_blocks * 2 * WINDOW * IMAGE_TOKENS * dit_config.model_channels * 2   # bytes
    print(f"held above the weights: one window {(short - eager) / 2**20:.1f} MiB, after 64 frames "
          f"{(long - eager) / 2**20:.1f} MiB ({len(windows['starts'])} windows, {windows['per_call']} per call; "
          f"one window's conditioning {conditioning / 2**20:.1f} MiB)")
    assert windows["per_call"] == len(windows["starts"]) > 1
    assert short - eager >= conditioning                  # the one-window graph and its copy are kept
    assert long - short < conditioning / 2                # the long shot's batched call kept nothing
    assert abs(short_again - long) < conditioning / 2     # the one-window graph serves again
