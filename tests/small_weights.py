"""A weights folder with small random networks in the published layouts (gvf/, dinov2/, trellis/), for end-to-end
runs on a CPU. The TRELLIS networks are the golden_trellis ones (random, small), written as the published files."""
import json

import torch
from safetensors.torch import save_file

from gvf4d.models.gvf_dit import GVFDiT, GVFDiTConfig
from gvf4d.models.motion_vae import MotionVAE, MotionVAEConfig
from gvf4d.pipelines.gvf import CONFIG_FILE, GVF_FILES
from gvf4d.pipelines.trellis import GAUSSIAN_DECODER_FILE

from golden import config, load

IMAGE_CHANNELS = 64   # DINOv2 width: the GVF DiT's image condition and TRELLIS' cond_channels
DIT = dict(resolution=64, model_channels=64, num_blocks=2, num_heads=4, image_cond_channels=IMAGE_CHANNELS)
VAE = dict(depth=1, dim=48, queries_dim=48, num_inputs=128, num_latents=64, heads=4, num_timesteps=4)
TRELLIS_NETWORKS = {"sparse_structure_flow_model": ("ss_flow_small", "SparseStructureFlowModel"),
                    "sparse_structure_decoder": ("ss_decoder_small", "SparseStructureDecoder"),
                    "slat_flow_model": ("slat_flow_small", "SLatFlowModel")}
GOLDEN = ("GVF_GOLDEN_TRELLIS_DIR", "trellis")


def write_gvf(gvf):
    gvf.mkdir(parents=True)
    torch.manual_seed(0)
    dit, vae = GVFDiT(GVFDiTConfig(**DIT)), MotionVAE(MotionVAEConfig(**VAE))
    for p in list(dit.parameters()) + list(vae.parameters()):
        torch.nn.init.normal_(p, std=0.02)
    torch.save({f"module.{k}": v for k, v in dit.state_dict().items()}, gvf / f"{GVF_FILES['dit']}.pt")
    torch.save(vae.state_dict(), gvf / f"{GVF_FILES['motion_vae']}.pt")
    torch.save(torch.zeros(14), gvf / "static_mean.pt")
    torch.save(torch.ones(14), gvf / "static_std.pt")
    torch.save(torch.zeros(16), gvf / "deformation_mean.pt")
    torch.save(torch.full((16,), 0.5), gvf / "deformation_std.pt")
    (gvf / CONFIG_FILE).write_text(json.dumps({"dit": DIT, "motion_vae": VAE}))
    # GVF's Gaussian decoder, named as its static-VAE checkpoint names it
    weights, _ = load("gs_decoder_small_weights.safetensors", *GOLDEN)
    renamed = {}
    for k, v in weights.items():
        if k.startswith("blocks."):
            k = "decoder." + k[len("blocks."):]
        elif k.startswith("input_layer."):
            k = "from_latent." + k[len("input_layer."):]
        renamed["module." + k] = v
    torch.save(renamed, gvf / f"{GAUSSIAN_DECODER_FILE}.pt")


def write_dinov2(folder):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel
    torch.manual_seed(0)
    cfg = Dinov2WithRegistersConfig(hidden_size=IMAGE_CHANNELS, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, image_size=518, patch_size=14, num_register_tokens=4)
    Dinov2WithRegistersModel(cfg).save_pretrained(folder)


def write_trellis(folder):
    (folder / "ckpts").mkdir(parents=True)
    models = {}
    for key, (name, cls) in TRELLIS_NETWORKS.items():
        weights, _ = load(f"{name}_weights.safetensors", *GOLDEN)
        save_file(weights, str(folder / "ckpts" / f"{name}.safetensors"))
        (folder / "ckpts" / f"{name}.json").write_text(json.dumps(
            {"name": cls, "args": config(f"{name}_weights.safetensors", *GOLDEN)}))
        models[key] = f"ckpts/{name}"
    gs = config("gs_decoder_small_weights.safetensors", *GOLDEN)
    gs["representation_config"]["num_gaussians"] = 32      # as published; GVF overrides it to 8
    (folder / "ckpts" / "gs_decoder_small.json").write_text(json.dumps({"name": "SLatGaussianDecoder", "args": gs}))
    models["slat_decoder_gs"] = "ckpts/gs_decoder_small"
    sampler = lambda steps: {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},  # noqa: E731
                             "params": {"steps": steps, "cfg_strength": 5.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}
    (folder / "pipeline.json").write_text(json.dumps({"name": "TrellisImageTo3DPipeline", "args": {
        "models": models, "sparse_structure_sampler": sampler(25), "slat_sampler": sampler(25),
        "slat_normalization": {"mean": [0.1] * 8, "std": [2.0] * 8}, "image_cond_model": "dinov2_vitl14_reg"}}))


def write_clip(folder):
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "intermediate_size": 64},
                     vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                    "intermediate_size": 64, "image_size": 64, "patch_size": 16}, projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)


def write_small_weights(root):
    write_gvf(root / "gvf")
    write_dinov2(root / "dinov2")
    write_trellis(root / "trellis")
    write_clip(root / "clip")
    return root
