"""Engines that produce the variation field (per-frame tracks) for a canonical splat."""
