"""Networks: the GVF DiT, the motion VAE, and their building blocks (weights load unchanged)."""
